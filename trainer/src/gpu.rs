//! What the GPU's driver says about its memory.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// GPU memory this process holds, in MiB, as the driver reports it
/// (`nvidia-smi`): its CUDA context and libtorch's cache of freed blocks
/// included. libtorch keeps the blocks it freed, so read after an update
/// this is the most the training needed so far. Where the driver does not
/// list this process (a container with its own process ids), the memory in
/// use by every process on the GPU this process sees first
/// (`CUDA_VISIBLE_DEVICES`' first entry, else GPU 0). `None` where neither
/// can be read (no driver tool, no GPU, no answer within 5 seconds).
pub fn memory_used_mib() -> Option<f64> {
    let pid = std::process::id().to_string();
    let own = query(&[
        "--query-compute-apps=pid,used_memory",
        "--format=csv,noheader,nounits",
    ])
    .and_then(|text| {
        text.lines().find_map(|line| {
            let (p, mib) = line.split_once(',')?;
            (p.trim() == pid).then(|| mib.trim().parse().ok())?
        })
    });
    own.or_else(|| {
        let id = std::env::var("CUDA_VISIBLE_DEVICES")
            .ok()
            .and_then(|v| v.split(',').next().map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "0".into());
        query(&[
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
            &format!("--id={id}"),
        ])?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
    })
}

/// `nvidia-smi ARGS`'s output; `None` if it fails or takes over 5 seconds
/// (a driver that hangs must not stall training).
fn query(args: &[&str]) -> Option<String> {
    let mut child = Command::new("nvidia-smi")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if started.elapsed() > Duration::from_secs(5) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    Some(out)
}
