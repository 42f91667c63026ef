;; A WASI command: `_start` that ends with proc_exit(0), as some toolchains do. Reads its
;; environment during start (allowed, as in Envoy).
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  ;;LIB
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_start")
    (drop (call $env_sizes (i32.const 60064) (i32.const 60068)))
    (call $log_num (str "start env-count=") (i32.load (i32.const 60064)))
    (call $exit (i32.const 0)))
)
