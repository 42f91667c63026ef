;; A callback with the wrong signature is refused at load, not at the first request.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  ;;LIB
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i64) (result i32) (i32.const 0))
)
