//! The Docker CLI, as kind and k3s use it: is a daemon there, is an image there, run a
//! command and say what failed.

use std::process::Command;

use crate::error::{Error, Result};

/// Whether a Docker daemon answers (`docker info`); `Err` says why not.
///
/// # Errors
/// [`Error::Provider`] naming what failed.
pub(crate) fn docker_available() -> Result<()> {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map_err(|e| Error::Provider(format!("no Docker daemon (cannot run `docker`: {e})")))?;
    if out.status.success() {
        Ok(())
    } else {
        let why = String::from_utf8_lossy(&out.stderr);
        Err(Error::Provider(format!(
            "no Docker daemon (`docker info`: {})",
            why.lines().last().unwrap_or("failed").trim()
        )))
    }
}

pub(crate) fn run(argv: &[String]) -> Result<String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Provider("empty command".into()))?;
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Provider(format!("cannot run `{program}` (is it on PATH?): {e}")))?;
    if !out.status.success() {
        return Err(Error::Provider(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `image` is present in the local Docker engine (the harness never pulls).
///
/// # Errors
/// [`Error::Provider`] naming the image and how to provide it.
pub(crate) fn image_present(image: &str) -> Result<()> {
    run(&[
        "docker".into(),
        "image".into(),
        "inspect".into(),
        "--format".into(),
        "{{.Id}}".into(),
        image.into(),
    ])
    .map(drop)
    .map_err(|_| {
        Error::Provider(format!(
            "the image {image} is not present in the local Docker engine, and kube-harness never pulls: \
                 build or load it first (`docker image ls` lists what is there)"
        ))
    })
}
