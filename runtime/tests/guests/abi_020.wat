;; ABI 0.2.0 (TinyGo's proxy-wasm-go-sdk 0.18): three-argument header callbacks, and a missing
;; header answers NOT_FOUND.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))
  ;;LIB
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "_start"))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $log_num (str "eos=") (local.get $eos))
    (call $log_num (str "status=")
      (call $get_hv (i32.const 0) (str "x-missing") (i32.const 60000) (i32.const 60004)))
    (i32.const 0))
)
