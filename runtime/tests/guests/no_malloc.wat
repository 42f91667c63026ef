;; No allocator export: the host could never hand it data.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
)
