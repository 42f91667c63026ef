  ;; ---- lib.wat: spliced into every guest after its imports (needs $proxy_log imported) ----
  ;; Memory map: 1024.. strings (data segments), 60000.. return slots and scratch, 65536.. heap.
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))

  ;; A bump allocator that grows memory as needed; 0 when memory cannot grow.
  (func $malloc (export "malloc") (param $n i32) (result i32)
    (local $p i32) (local $need i32)
    (local.set $p (global.get $heap))
    (global.set $heap
      (i32.and (i32.add (i32.add (global.get $heap) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (local.set $need (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (local.get $need) (i32.const 16)) (i32.const 1)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (local.get $p))

  (func $log (param $p i32) (param $n i32)
    (drop (call $proxy_log (i32.const 2) (local.get $p) (local.get $n))))

  ;; Logs the prefix followed by the signed decimal value.
  (func $log_num (param $p i32) (param $n i32) (param $v i32)
    (local $len i32) (local $u i32) (local $i i32)
    (memory.copy (i32.const 60100) (local.get $p) (local.get $n))
    (local.set $len (local.get $n))
    (local.set $u (local.get $v))
    (if (i32.lt_s (local.get $v) (i32.const 0))
      (then
        (i32.store8 (i32.add (i32.const 60100) (local.get $len)) (i32.const 45))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (local.set $u (i32.sub (i32.const 0) (local.get $v)))))
    (loop $digits
      (i32.store8 (i32.add (i32.const 60400) (local.get $i))
                  (i32.add (i32.const 48) (i32.rem_u (local.get $u) (i32.const 10))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (local.set $u (i32.div_u (local.get $u) (i32.const 10)))
      (br_if $digits (i32.ne (local.get $u) (i32.const 0))))
    (loop $rev
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (i32.const 60100) (local.get $len))
                  (i32.load8_u (i32.add (i32.const 60400) (local.get $i))))
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (br_if $rev (i32.gt_s (local.get $i) (i32.const 0))))
    (call $log (i32.const 60100) (local.get $len)))

  ;; Logs "prefix" followed by the bytes at p2/n2.
  (func $log_cat (param $p i32) (param $n i32) (param $p2 i32) (param $n2 i32)
    (memory.copy (i32.const 60100) (local.get $p) (local.get $n))
    (memory.copy (i32.add (i32.const 60100) (local.get $n)) (local.get $p2) (local.get $n2))
    (call $log (i32.const 60100) (i32.add (local.get $n) (local.get $n2))))

  (func $eq (param $a i32) (param $al i32) (param $b i32) (param $bl i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $al) (local.get $bl)) (then (return (i32.const 0))))
    (block $out
      (loop $l
        (br_if $out (i32.ge_u (local.get $i) (local.get $al)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 1))

  ;; Decimal string to i32 (digits only).
  (func $atoi (param $p i32) (param $n i32) (result i32)
    (local $v i32) (local $i i32)
    (block $out
      (loop $l
        (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10))
                               (i32.sub (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 48))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $v))
  ;; ---- end of lib.wat ----
