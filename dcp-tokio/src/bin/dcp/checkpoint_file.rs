//! The checkpoint file of `dcp tail`: the core's versioned JSON checkpoint,
//! replaced atomically (temporary file, fsync, rename).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use dcp_tokio::dcp_proto::session::Checkpoint;

use crate::Failure;

/// Reads the checkpoint at `path`; `None` when the file does not exist.
pub(crate) fn load(path: &Path) -> Result<Option<Checkpoint>, Failure> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(Failure(format!(
                "cannot read checkpoint {}: {err}",
                path.display()
            )));
        }
    };
    Checkpoint::from_json(&bytes).map(Some).map_err(|err| {
        Failure(format!(
            "checkpoint {} is not usable: {err} (move it away to start over)",
            path.display()
        ))
    })
}

/// Writes `checkpoint` to `path` so that a crash leaves the old or the new
/// file, never a torn one.
pub(crate) fn save(path: &Path, checkpoint: &Checkpoint) -> Result<(), Failure> {
    let fail = |err: &dyn std::fmt::Display| {
        Failure(format!("cannot write checkpoint {}: {err}", path.display()))
    };
    let json = checkpoint.to_json().map_err(|e| fail(&e))?;
    let tmp = temp_path(path);
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(&e)
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "checkpoint".into());
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}
