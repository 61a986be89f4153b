//! `runsc-<sha256>` in atelet's asset cache: drops the flags its config
//! names and execs the real runsc (see the library's docs).

use std::io::Write;
use std::os::unix::process::CommandExt;

use ate_runsc_adapter::{filter, Config};

fn main() {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => fail(&format!("cannot find its own path: {e}")),
    };
    let cfg_path = format!("{}.adapter.json", exe.display());
    let cfg: Config = match std::fs::read(&cfg_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => fail(&format!("cannot read its config {cfg_path}: {e}")),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kept, dropped) = filter(&args, &cfg.drop);
    if !dropped.dropped.is_empty() {
        let line = serde_json::to_string(&dropped).expect("serialisable");
        let logged = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.log)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = logged {
            fail(&format!("cannot append to {}: {e}", cfg.log));
        }
    }
    let e = std::process::Command::new(&cfg.runsc).args(&kept).exec();
    fail(&format!("cannot exec {}: {e}", cfg.runsc))
}

fn fail(msg: &str) -> ! {
    eprintln!("ate-runsc-adapter: {msg}");
    std::process::exit(127)
}
