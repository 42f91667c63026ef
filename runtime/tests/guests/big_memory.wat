;; Declares 300 pages (~19 MiB) of initial memory: above a 16 MiB limit, refused at instantiation.
(module
  (memory (export "memory") 300)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
)
