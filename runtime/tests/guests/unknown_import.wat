;; Imports the host does not provide: refused at load, naming both.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_frobnicate" (func (param i32) (result i32)))
  (import "my_host" "magic" (func (result i32)))
  ;;LIB
  (func (export "proxy_abi_version_0_2_1"))
)
