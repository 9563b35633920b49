//! What the GPU's driver says about its memory.

use std::process::Command;

/// GPU memory this process holds, in MiB, as the driver reports it
/// (`nvidia-smi`): its CUDA context and libtorch's cache of freed blocks
/// included. libtorch keeps the blocks it freed, so read after an update
/// this is the most the training needed so far. Where the driver does not
/// list this process (a container with its own process ids), the memory in
/// use on GPU 0 by every process. `None` where neither can be read (no
/// driver tool, no GPU).
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
        query(&[
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
            "--id=0",
        ])?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
    })
}

fn query(args: &[&str]) -> Option<String> {
    let out = Command::new("nvidia-smi").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
