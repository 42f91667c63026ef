;; Hostile behaviour in on_request_headers, chosen by the number of request headers:
;; 1 → infinite loop; 2 → memory bomb; 3 → unreachable; 4 → grow by 8 MiB once (fine under a
;; 16 MiB limit); 5 → a bounded busy loop (~a few ms). Any other count: continue.
;; The plugin configuration names a callback that traps: vm_start, configure, create_stream,
;; response_headers, request_body, log, delete, http_call_response, tick, queue_ready.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $reg_q (param i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enq (param i32 i32 i32) (result i32)))
  ;;LIB
  (func (export "proxy_abi_version_0_2_1"))
  (global $cfg_ptr (mut i32) (i32.const 0))
  (global $cfg_len (mut i32) (i32.const 0))
  (func $trap_if (param $p i32) (param $n i32)
    (if (call $eq (global.get $cfg_ptr) (global.get $cfg_len) (local.get $p) (local.get $n))
      (then unreachable)))
  (func $load_config (param $size i32)
    (if (i32.eqz (call $get_buf (i32.const 7) (i32.const 0) (local.get $size) (i32.const 60000) (i32.const 60004)))
      (then
        (global.set $cfg_ptr (i32.load (i32.const 60000)))
        (global.set $cfg_len (i32.load (i32.const 60004))))))
  (func (export "proxy_on_vm_start") (param $ctx i32) (param $size i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $ctx i32) (param $size i32) (result i32)
    (call $load_config (local.get $size))
    (call $trap_if (str "configure"))
    (if (call $eq (global.get $cfg_ptr) (global.get $cfg_len) (str "tick"))
      (then (drop (call $set_tick (i32.const 10)))))
    (if (call $eq (global.get $cfg_ptr) (global.get $cfg_len) (str "queue_ready"))
      (then
        (drop (call $reg_q (str "hq") (i32.const 60016)))
        (drop (call $enq (i32.load (i32.const 60016)) (str "x")))))
    (i32.const 1))
  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)
    (if (i32.ne (local.get $parent) (i32.const 0)) (then (call $trap_if (str "create_stream")))))
  (func (export "proxy_on_tick") (param i32) (call $trap_if (str "tick")))
  (func (export "proxy_on_queue_ready") (param i32 i32) (call $trap_if (str "queue_ready")))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $i i32)
    (if (i32.eq (local.get $n) (i32.const 1)) (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $n) (i32.const 2))
      (then
        (loop $bomb
          (br_if $bomb (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))
    (if (i32.eq (local.get $n) (i32.const 3)) (then unreachable))
    (if (i32.eq (local.get $n) (i32.const 4))
      (then (if (i32.eq (memory.grow (i32.const 128)) (i32.const -1)) (then unreachable))))
    (if (i32.eq (local.get $n) (i32.const 5))
      (then
        (loop $busy
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $busy (i32.lt_u (local.get $i) (i32.const 1000000))))))
    (if (call $eq (global.get $cfg_ptr) (global.get $cfg_len) (str "http_call_response"))
      (then
        (drop (call $http_call (str "up")
          (str "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\01\00\00\00:method\00GET\00:path\00/\00:authority\00a\00")
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 60016)))
        (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32) (call $trap_if (str "http_call_response")))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (call $trap_if (str "request_body")) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $trap_if (str "response_headers")) (i32.const 0))
  (func (export "proxy_on_log") (param i32) (call $trap_if (str "log")))
  (func (export "proxy_on_delete") (param i32) (call $trap_if (str "delete")))
)
