//! A real watch on a temp dir: writes, editor-style renames, deletes and a ConfigMap-style
//! `..data` symlink swap each trigger the callback.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use wasmgate_conf::*;

// Generous: the machine is shared and loaded; the coalescing window itself is 50 ms.
const WAIT: Duration = Duration::from_secs(20);

fn drain(rx: &mpsc::Receiver<()>) {
    while rx.try_recv().is_ok() {}
}

fn expect_change(rx: &mpsc::Receiver<()>, what: &str) {
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("no change notification after {what}"));
}

/// Waits until the directory's config (as `reload` sees it) satisfies `ok`, as the gateway would.
fn reload_until(
    store: &mut ConfigStore,
    dir: &Path,
    rx: &mpsc::Receiver<()>,
    what: &str,
    ok: impl Fn(&Snapshot) -> bool,
) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (s, _) = store.reload(dir);
        if ok(&s) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "config never reflected {what}"
        );
        let _ = rx.recv_timeout(Duration::from_millis(200));
    }
}

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\n";

#[test]
fn watch_reports_writes_renames_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let (tx, rx) = mpsc::channel();
    let handle = watch(&d, Duration::from_millis(50), move || {
        let _ = tx.send(());
    })
    .unwrap();
    assert_eq!(handle.dir(), d);
    let mut store = ConfigStore::new();

    std::fs::write(d.join("a.yaml"), SVC.replace("NAME", "a")).unwrap();
    expect_change(&rx, "create");
    reload_until(&mut store, &d, &rx, "create", |s| {
        s.service("default", "a").is_some()
    });

    // Editor save: write a temp file, rename over the original.
    drain(&rx);
    std::fs::write(d.join(".a.yaml.swp"), SVC.replace("NAME", "a2")).unwrap();
    std::fs::rename(d.join(".a.yaml.swp"), d.join("a.yaml")).unwrap();
    expect_change(&rx, "rename");
    reload_until(&mut store, &d, &rx, "rename", |s| {
        s.service("default", "a2").is_some() && s.service("default", "a").is_none()
    });

    drain(&rx);
    std::fs::remove_file(d.join("a.yaml")).unwrap();
    expect_change(&rx, "delete");
    reload_until(&mut store, &d, &rx, "delete", |s| s.services.is_empty());

    // After the handle is dropped, no more callbacks.
    drop(handle);
    // Let a batch already in flight at the drop arrive, then expect silence.
    std::thread::sleep(Duration::from_millis(300));
    drain(&rx);
    std::fs::write(d.join("b.yaml"), SVC.replace("NAME", "b")).unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "callback after the handle was dropped"
    );
}

#[cfg(unix)]
#[test]
fn watch_follows_a_configmap_style_data_symlink_swap() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    // kubelet's layout: ..2024_v1/ holds files, ..data -> ..2024_v1, config.yaml -> ..data/config.yaml
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(d.join("..v1/config.yaml"), SVC.replace("NAME", "one")).unwrap();
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/config.yaml", d.join("config.yaml")).unwrap();

    let mut store = ConfigStore::new();
    let (s, r) = store.reload(&d);
    assert!(r.is_ok(), "{:?}", r.errors);
    assert!(s.service("default", "one").is_some());
    assert_eq!(
        s.ignored.len() + s.rejected.len(),
        0,
        "..data and ..v1 must be skipped"
    );

    let (tx, rx) = mpsc::channel();
    let _handle = watch(&d, Duration::from_millis(50), move || {
        let _ = tx.send(());
    })
    .unwrap();
    // The atomic swap: new dir, new symlink ..data_tmp, rename over ..data.
    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(d.join("..v2/config.yaml"), SVC.replace("NAME", "two")).unwrap();
    symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    expect_change(&rx, "..data swap");
    reload_until(&mut store, &d, &rx, "..data swap", |s| {
        s.service("default", "two").is_some()
    });
}

#[cfg(unix)]
#[test]
fn watch_polls_a_config_dir_that_is_itself_a_symlink() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_owned();
    std::fs::create_dir(r.join("release-1")).unwrap();
    std::fs::write(r.join("release-1/svc.yaml"), SVC.replace("NAME", "one")).unwrap();
    symlink("release-1", r.join("current")).unwrap();
    let d = r.join("current");

    let (tx, rx) = mpsc::channel();
    let handle = watch(&d, Duration::from_millis(50), move || {
        let _ = tx.send(());
    })
    .unwrap();
    assert!(handle.is_polling());
    let mut store = ConfigStore::new();
    reload_until(&mut store, &d, &rx, "initial", |s| {
        s.service("default", "one").is_some()
    });

    // `ln -sfn release-2 current`, atomically.
    std::fs::create_dir(r.join("release-2")).unwrap();
    std::fs::write(r.join("release-2/svc.yaml"), SVC.replace("NAME", "two")).unwrap();
    symlink("release-2", r.join("current.tmp")).unwrap();
    std::fs::rename(r.join("current.tmp"), &d).unwrap();
    expect_change(&rx, "symlink swap");
    reload_until(&mut store, &d, &rx, "symlink swap", |s| {
        s.service("default", "two").is_some()
    });

    // Edits inside the new target are seen too.
    drain(&rx);
    std::fs::write(r.join("release-2/svc.yaml"), SVC.replace("NAME", "three")).unwrap();
    expect_change(&rx, "edit after swap");
    reload_until(&mut store, &d, &rx, "edit after swap", |s| {
        s.service("default", "three").is_some()
    });
}

/// A directory rewritten continuously (every 20 ms here; benchmarks rewrite every 100 ms) still
/// reloads while the writes go on: a debounce that waits for quiet would stay silent until they stop.
#[test]
fn watch_fires_while_the_directory_keeps_changing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let (tx, rx) = mpsc::channel();
    let _handle = watch(&d, Duration::from_millis(50), move || {
        let _ = tx.send(());
    })
    .unwrap();

    let writer = {
        let d = d.clone();
        std::thread::spawn(move || {
            for i in 0..150 {
                std::fs::write(d.join("a.yaml"), SVC.replace("NAME", &format!("a{i}"))).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // At least two callbacks arrive before the writer (≥ 3 s of writes) is done.
    expect_change(&rx, "the first of continuous writes");
    expect_change(&rx, "continuous writes");
    assert!(
        !writer.is_finished(),
        "callbacks only came after the writes stopped"
    );
    writer.join().unwrap();
}
