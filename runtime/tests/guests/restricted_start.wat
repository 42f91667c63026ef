;; `_initialize` calling a host function other than proxy_log: cpp-host refuses it
;; (restricted_callback), so do we.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_prop (param i32 i32 i32 i32) (result i32)))
  ;;LIB
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize")
    (drop (call $get_prop (str "plugin_name") (i32.const 60000) (i32.const 60004))))
)
