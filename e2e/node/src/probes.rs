//! Readiness and liveness probes, counted as a kubelet counts them: thresholds of failures and
//! successes in a row.

use std::{
    io::{Read, Write},
    path::Path,
    process::Stdio,
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Container, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::Ctx;

/// A readiness or liveness probe's schedule and counts.
pub(crate) struct Prober {
    pub(crate) probe: Probe,
    pub(crate) kind: &'static str,
    pub(crate) next: tokio::time::Instant,
    pub(crate) successes: i32,
    pub(crate) failures: i32,
    pub(crate) state: Option<bool>,
}

impl Prober {
    pub(crate) fn new(probe: Probe, kind: &'static str) -> Self {
        let delay = probe.initial_delay_seconds.unwrap_or(0).max(0) as u64;
        Self {
            next: tokio::time::Instant::now() + Duration::from_secs(delay),
            probe,
            kind,
            successes: 0,
            failures: 0,
            state: None,
        }
    }

    pub(crate) fn due(&self) -> bool {
        tokio::time::Instant::now() >= self.next
    }

    /// Counts a result; returns the new state when it changed (thresholds applied).
    pub(crate) fn record(&mut self, ok: bool) -> Option<bool> {
        let period = self.probe.period_seconds.unwrap_or(10).max(1) as u64;
        self.next = tokio::time::Instant::now() + Duration::from_secs(period);
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let new = if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
            Some(true)
        } else if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1)
            || (self.kind == "readiness" && self.state.is_none() && !ok)
        {
            Some(false)
        } else {
            None
        };
        match new {
            Some(n) if self.state != Some(n) => {
                self.state = Some(n);
                Some(n)
            }
            _ => None,
        }
    }

    pub(crate) async fn probe(&self, ctx: &Ctx, c: &Container, spec: &Path, pid: i32, ip: &str, netns: &str) -> bool {
        // At least 3 s: the machine is shared, and a probe process starts a client of its own.
        let timeout = Duration::from_secs(self.probe.timeout_seconds.unwrap_or(1).max(3) as u64);
        let port_of = |port: &IntOrString| -> Option<u16> {
            match port {
                IntOrString::Int(p) => u16::try_from(*p).ok(),
                IntOrString::String(name) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
            }
        };
        if let Some(exec) = &self.probe.exec {
            let mut cmd = tokio::process::Command::new(&ctx.self_exe);
            cmd.arg("enter").arg("--pid").arg(pid.to_string()).arg("--spec").arg(spec).arg("--");
            cmd.args(exec.command.iter().flatten());
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
            return matches!(tokio::time::timeout(timeout, cmd.status()).await, Ok(Ok(s)) if s.success());
        }
        let (port, http_path) = if let Some(t) = &self.probe.tcp_socket {
            (port_of(&t.port), None)
        } else if let Some(h) = &self.probe.http_get {
            (port_of(&h.port), Some(h.path.clone().unwrap_or_else(|| "/".into())))
        } else {
            (None, None)
        };
        let Some(port) = port else { return false };
        let addr: std::net::SocketAddr = match format!("{ip}:{port}").parse() {
            Ok(a) => a,
            Err(_) => return false,
        };
        let netns = netns.to_string();
        let check = tokio::task::spawn_blocking(move || {
            crate::network::in_namespace(&netns, move || {
                let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
                let Some(path) = http_path else { return Ok(true) };
                stream.set_read_timeout(Some(timeout))?;
                write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: kube-probe/local\r\n\r\n")?;
                let mut head = [0u8; 12];
                stream.read_exact(&mut head)?;
                let code: u16 = String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0);
                Ok((200..400).contains(&code))
            })
        });
        matches!(check.await, Ok(Ok(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn probe(failure: i32, success: i32) -> Probe {
        Probe { failure_threshold: Some(failure), success_threshold: Some(success), ..Default::default() }
    }

    #[test]
    pub(crate) fn readiness_starts_unready_and_needs_the_failure_threshold_to_drop() {
        let mut p = Prober::new(probe(3, 1), "readiness");
        assert_eq!(p.record(false), Some(false), "a first failure says not ready at once");
        assert_eq!(p.record(true), Some(true));
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), Some(false), "the third failure in a row");
        assert_eq!(p.record(false), None, "reported once");
    }

    #[test]
    pub(crate) fn liveness_fails_only_after_the_threshold_and_a_success_resets_the_count() {
        let mut p = Prober::new(probe(3, 1), "liveness");
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(true), Some(true));
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), Some(false));
    }

    #[test]
    pub(crate) fn a_success_threshold_counts_successes_in_a_row() {
        let mut p = Prober::new(probe(1, 2), "readiness");
        assert_eq!(p.record(true), None);
        assert_eq!(p.record(false), Some(false));
        assert_eq!(p.record(true), None);
        assert_eq!(p.record(true), Some(true));
    }
}
