//! The `rig-agent` command: CLI, logging set-up and exit codes; nothing else.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::exit;
use std::sync::Arc;

use rig_agent::agent::Agent;
use rig_agent::config::{Config, ConfigErrors, DEFAULT_PATH};
use rig_agent::maintenance::client::{ClientError, describe};
use rig_agent::maintenance::state::parse_length;
use rig_agent::maintenance::wire::Ask;
use rig_agent::os::signals::Shutdown;
use rig_agent::protocol::{Inbound, decode};
use rig_agent::queries::answers::Probes;
use rig_agent::queries::{Catalogue, STANDARD_ACTS};
use rig_agent::status::AgentStatus;
use rig_agent::{exit as code, logging, version};

/// The usage text; `acts` are the queries `probe` answers.
fn usage() -> String {
    format!(
        "\
usage: rig-agent [--config PATH]              run the agent (what systemd starts)
       rig-agent [--config PATH] check        validate the config, print it without secrets
       rig-agent [--config PATH] probe ACT    print the data of a query, answered locally
       rig-agent [--config PATH] privileged   the privileged half (rig-agent-privileged.service)
       rig-agent [--config PATH] maintenance on DURATION|off|status
                                              maintenance of the running agent (e.g. on 2h)
       rig-agent --version | --help

acts for probe: {}
default config: /etc/rig-agent/rig-agent.toml
exit codes: 0 clean stop, 78 config error, 64 usage error, 69 no running agent (maintenance),\n  1 other failure",
        STANDARD_ACTS.join(", ")
    )
}

enum Command {
    Run,
    Check,
    Probe(String),
    Privileged,
    Maintenance(Ask),
}

/// What the command line asks for.
enum Cli {
    Help,
    Version,
    Do(PathBuf, Command),
}

/// The arguments as the OS gave them (without the program name), so a config path need
/// not be UTF-8. Takes `--config PATH`, `--config=PATH`, `-c PATH`, `-cPATH` and `--`.
fn parse_args(mut args: impl Iterator<Item = OsString>) -> Result<Cli, String> {
    let mut config = PathBuf::from(DEFAULT_PATH);
    let mut words = Vec::new();
    while let Some(arg) = args.next() {
        let Some(a) = arg.to_str() else {
            return Err(format!("argument {arg:?} is not valid UTF-8"));
        };
        match a {
            "--version" | "-V" => return Ok(Cli::Version),
            "--help" | "-h" => return Ok(Cli::Help),
            "--config" | "-c" => config = args.next().ok_or("missing argument for option '--config'")?.into(),
            "--" => {
                words.extend(args.by_ref().map(|w| w.to_string_lossy().into_owned()));
            }
            a if a.starts_with("--config=") => config = a["--config=".len()..].into(),
            a if a.starts_with("-c") => config = a[2..].into(),
            a if a.starts_with('-') => return Err(format!("invalid option '{a}'")),
            _ => words.push(a.to_string()),
        }
    }
    let command = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => Command::Run,
        ["check"] => Command::Check,
        ["privileged"] => Command::Privileged,
        ["probe", act] => Command::Probe(act.to_string()),
        ["probe"] => return Err("probe needs an act, e.g. probe get_agent_info".into()),
        ["maintenance", "status"] => Command::Maintenance(Ask::Status),
        ["maintenance", "off"] => Command::Maintenance(Ask::Off),
        ["maintenance", "on", length] => Command::Maintenance(Ask::On(parse_length(length)?)),
        ["maintenance", ..] => return Err("maintenance takes: on DURATION (e.g. on 2h), off or status".into()),
        _ => return Err(format!("unexpected arguments: {}", words.join(" "))),
    };
    Ok(Cli::Do(config, command))
}

/// The config by `how` (running or checking), or exit 78 with every refusal.
fn load(path: &Path, how: fn(&Path) -> Result<Config, ConfigErrors>) -> Config {
    how(path).unwrap_or_else(|e| config_exit(&e))
}

/// Prints every refusal of the config, one line each, and exits 78 (EX_CONFIG).
fn config_exit(errors: &ConfigErrors) -> ! {
    for e in errors.iter() {
        eprintln!("rig-agent: {e}");
    }
    exit(code::CONFIG)
}

fn main() {
    let cli = parse_args(std::env::args_os().skip(1)).unwrap_or_else(|e| {
        eprintln!("rig-agent: {e}\n{}", usage());
        exit(code::USAGE)
    });
    let (path, command) = match cli {
        Cli::Help => {
            println!("{}", usage());
            exit(code::OK)
        }
        Cli::Version => {
            println!("rig-agent {}", version());
            exit(code::OK)
        }
        Cli::Do(path, command) => (path, command),
    };
    match command {
        Command::Privileged => {
            logging::init();
            let cfg = Config::load_for_privileged(&path).unwrap_or_else(|e| config_exit(&e));
            let Some(socket) = cfg.paths.privileged_socket.clone() else {
                log::error!("paths.privileged_socket is \"\": nothing to serve");
                exit(code::CONFIG)
            };
            // SIGTERM (systemd's stop) and SIGINT end the serving loop at once, which says
            // so; SIGHUP no longer kills it (every request rereads the config anyway).
            let (waker, wake) = rig_agent::os::wake::pair().unwrap_or_else(|e| {
                log::error!("cannot create the wake pipe: {e}");
                exit(code::FAILURE)
            });
            let shutdown = Shutdown::new(waker);
            if let Err(e) = shutdown.install_signal_handlers() {
                log::error!("cannot install signal handlers: {e}");
                exit(code::FAILURE);
            }
            let listener = rig_agent::os::local_socket::bind(&socket, rig_agent::privileged::server::PRIVILEGED)
                .unwrap_or_else(|e| {
                    log::error!("{}", rig_agent::protocol::escape::escape(&e.to_string()));
                    exit(code::FAILURE)
                });
            log::info!("rig-agent {} privileged half listening on {}", version(), socket.display());
            rig_agent::privileged::server::serve(listener, path, cfg, &shutdown, &wake);
        }
        Command::Check => {
            let cfg = load(&path, Config::load_for_check);
            drop_privileges();
            print!("{}", cfg.render());
            eprintln!("rig-agent: {} is valid", path.display());
        }
        Command::Maintenance(ask) => {
            let cfg = load(&path, Config::load_for_check);
            // Connected as whoever runs it (root reaches the agent user's 0600 socket only
            // with its capabilities); nothing else is done with them.
            let answer = rig_agent::maintenance::client::ask(&cfg.paths.state_dir, ask);
            drop_privileges();
            match answer {
                Ok(state) => println!("{}", describe(&state, rig_agent::status::unix_now())),
                Err(e) => {
                    eprintln!("rig-agent: {e}");
                    exit(match e {
                        ClientError::NoAgent(_) => code::UNAVAILABLE,
                        ClientError::Refused(_) | ClientError::Failed(_) => code::FAILURE,
                    })
                }
            }
        }
        Command::Probe(act) => {
            logging::init();
            let cfg = load(&path, Config::load);
            drop_privileges();
            exit(probe(cfg, &act))
        }
        Command::Run => {
            logging::init();
            let cfg = load(&path, Config::load);
            log::info!(
                "rig-agent {} starting as {} with {} (gateways: {})",
                version(),
                cfg.device.hardware_id,
                path.display(),
                cfg.gateway.urls.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(", ")
            );
            // An installed update runs in place of this binary, or on trial under it
            // (update/launcher.rs); this returns when this binary is the one to run.
            let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
            rig_agent::update::launcher::launch(&cfg, &args);
            // Under the packaged units the privileged half streams the kernel log (this
            // unit has no CAP_SYSLOG and ProtectKernelLogs=). Without one, it is opened
            // while the process may still read it (the check is at open): run by hand as
            // root, the agent keeps its kernel-log source after the drop.
            let kmsg = rig_agent::privileged_client::kmsg_feed(&cfg);
            // After the start line, which says who is starting.
            drop_privileges();
            // What a command leaves running outside its process group comes back to the
            // agent when its parent exits, so that it ends with the run (os/orphans.rs).
            if let Err(e) = rig_agent::os::orphans::adopt() {
                log::warn!(
                    "cannot become the subreaper of the commands it runs ({e}): what a command leaves running \
                     outside its process group may outlive it"
                );
            }
            let mut agent = Agent::build_with_kmsg(cfg, kmsg).unwrap_or_else(|e| {
                log::error!("cannot start: {e}");
                exit(code::FAILURE)
            });
            if let Err(e) = agent.shutdown().install_signal_handlers() {
                log::error!("cannot install signal handlers: {e}");
                exit(code::FAILURE);
            }
            agent.run();
            if agent.restart_for_update() {
                // The switch is done: the outbox is flushed as the agent drops, then this
                // process starts again in place, and its launcher starts the new build.
                drop(agent);
                restart_in_place(&args);
            }
        }
    }
}

/// Everything but the privileged half gives up every capability, the supplementary groups
/// and the right to regain them, while it is still the only thread and before any network
/// or probe: a bug in the code that parses what the gateway sends must not reach the disks. Not before the config is loaded: the token and the
/// state directory belong to the `rig-agent` user, which root (`sudo rig-agent probe …`)
/// reaches only through CAP_DAC_OVERRIDE; the config is a local file root trusts anyway.
fn drop_privileges() {
    let d = rig_agent::os::caps::drop_all().unwrap_or_else(|e| {
        eprintln!("rig-agent: {e}");
        exit(code::FAILURE)
    });
    if d.had != 0 {
        log::info!("dropped capabilities {:#x}; this process holds none", d.had);
    }
    // The user's own primary group is no grant: `runuser -u rig-agent` (initgroups) lists
    // it as supplementary too, and it is the group the process has anyway.
    let (gid, egid) = (rustix::process::getgid().as_raw(), rustix::process::getegid().as_raw());
    let extra: Vec<u32> = d.groups_kept.into_iter().filter(|g| *g != gid && *g != egid).collect();
    if !extra.is_empty() {
        log::warn!("supplementary groups {extra:?} kept (no CAP_SETGID to clear them); the unit should grant none");
    }
}

/// Executes this binary again with the same arguments (same PID, as `Type=notify` wants);
/// exits with a failure, for the unit to restart it, if that cannot be done.
fn restart_in_place(args: &[std::ffi::OsString]) -> ! {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    log::info!("restarting into the update");
    let e = std::process::Command::new(&exe).args(args).exec();
    log::error!("cannot restart {} ({e}); exiting for the unit to restart it", exe.display());
    exit(code::FAILURE)
}

/// Answers one query locally, as `telegraf --test` or `zabbix_agent2 -t` do.
fn probe(cfg: Config, act: &str) -> i32 {
    let mut status = AgentStatus::new(cfg.file.clone());
    if let Some(url) = cfg.gateway.urls.first() {
        status = status.with_gateway(url.as_str());
    }
    let status = Arc::new(status);
    let catalogue = Catalogue::standard(Arc::new(Probes::from_config(&cfg)), status);
    if catalogue.lane(act).is_none() {
        eprintln!("rig-agent: unknown act {act:?}; known: {}", catalogue.acts().join(", "));
        return code::USAGE;
    }
    let Ok(Inbound::Query(query)) = decode(&serde_json::json!({ "act": act }).to_string()) else {
        return code::FAILURE;
    };
    if act == "get_system_status" {
        // CPU usage is the difference of two samples: take the first one here and wait
        // the 200 ms sysinfo needs, as a long-running agent has done long before.
        let _ = catalogue.run(&query);
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    match catalogue.run(&query) {
        Ok(data) => {
            println!("{}", serde_json::to_string_pretty(&data).unwrap_or_default());
            code::OK
        }
        Err(refusal) => {
            eprintln!("rig-agent: {act} failed: {}", refusal.description);
            code::FAILURE
        }
    }
}
