//! Unit tests of the parent module.

use super::*;

#[test]
fn tail_returns_the_last_lines() -> Result<(), Box<dyn std::error::Error>> {
    let dir = RunDir::create("tail-test")?;
    let path = dir.path().join("log");
    std::fs::write(&path, "a\nb\nc\nd\n")?;
    assert_eq!(tail(&path, 2), "c\nd");
    assert_eq!(tail(&dir.path().join("missing"), 2), "");
    Ok(())
}

#[test]
fn a_missing_binary_is_a_spawn_error() -> Result<(), Box<dyn std::error::Error>> {
    let dir = RunDir::create("spawn-test")?;
    let spec = ChildSpec::new(
        "nothing",
        "/nonexistent/kube-harness-no-such-binary",
        dir.path().join("log"),
    );
    let err = Child::spawn(&spec).err();
    assert!(matches!(err, Some(Error::Spawn { .. })), "{err:?}");
    Ok(())
}

#[test]
fn stop_terminates_the_child_and_its_group() -> Result<(), Box<dyn std::error::Error>> {
    let dir = RunDir::create("stop-test")?;
    let spec = ChildSpec {
        args: vec!["-c".into(), "sleep 300 & sleep 300".into()],
        ..ChildSpec::new("sleeper", "/bin/sh", dir.path().join("log"))
    };
    let child = Child::spawn(&spec)?;
    assert!(child.try_exit().is_none());
    child.stop(Duration::from_secs(2));
    assert!(child.try_exit().is_some());
    // The whole group is gone, the background `sleep` too (zombies waiting for init to
    // collect them do not count: they have exited).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live_group_members(child.pid()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "process group still alive: {:?}",
            live_group_members(child.pid())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
