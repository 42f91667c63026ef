;; Root-context state across requests: each request increments a per-VM counter (as a rate
;; limiter's bucket would) and reports it in the `x-count` request header.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))
  ;;LIB
  (func (export "proxy_abi_version_0_2_1"))
  (global $count (mut i32) (i32.const 0))
  ;; Decimal of v at 60500; returns its length.
  (func $itoa (param $v i32) (result i32)
    (local $i i32) (local $len i32)
    (loop $digits
      (i32.store8 (i32.add (i32.const 60400) (local.get $i))
                  (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digits (i32.ne (local.get $v) (i32.const 0))))
    (loop $rev
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (i32.const 60500) (local.get $len))
                  (i32.load8_u (i32.add (i32.const 60400) (local.get $i))))
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (br_if $rev (i32.gt_s (local.get $i) (i32.const 0))))
    (local.get $len))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (drop (call $add_hv (i32.const 0) (str "x-count") (i32.const 60500) (call $itoa (global.get $count))))
    (i32.const 0))
)
