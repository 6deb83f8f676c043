//! The worker's own limits on what the master may make it do with secrets:
//! which hosts it may send requests to and which environment variables it
//! may read as API keys.
//!
//! # Why the worker needs this
//! The master sends the whole test definition: the target `--host`, each
//! scenario's `endpoint` (which may be an absolute URL) and `api_key_env`.
//! A master that can be reached by someone else, or a scenarios file
//! someone else edited, could name `AWS_SECRET_ACCESS_KEY` as the key
//! variable and its own server as the endpoint, and the worker would send
//! that secret there in a header. The worker operator, who owns the
//! environment, sets the bounds: `--allow-host HOST[:PORT]` and
//! `--allow-key-env NAME`, each repeatable. An empty list means "no
//! restriction" (the default, for a trusted master on a private network).
//!
//! A scenario outside the lists is refused when the run is prepared, before
//! any request is sent and before the variable is read; the master gets
//! the reason as an exception and the run is stopped (`crate::engine`).
//!
//! Matching: host names compare exactly after URL normalisation (so case
//! does not matter); no DNS lookup is made, so `localhost` and `127.0.0.1`
//! are different rules. IPv6 literals are written in brackets (`[::1]:8000`).
//! A rule without a port allows every port of that host; with a port, only
//! that port (the URL's port, or 80/443 from its scheme).

use super::LlmError;

/// One `--allow-host` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    /// As `Url::host_str` writes it (lowercase, IPv6 in brackets).
    host: String,
    port: Option<u16>,
}

/// The allow-lists; empty lists allow everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    hosts: Vec<HostRule>,
    key_envs: Vec<String>,
}

impl AllowList {
    /// No restriction.
    pub fn any() -> AllowList {
        AllowList::default()
    }

    /// Parses `HOST[:PORT]` rules and variable names.
    pub fn new(hosts: &[String], key_envs: &[String]) -> Result<AllowList, LlmError> {
        let hosts = hosts.iter().map(|r| parse_rule(r)).collect::<Result<_, _>>()?;
        for k in key_envs {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(LlmError::BadAllowRule {
                    rule: k.clone(),
                    reason: "not an environment variable name".into(),
                });
            }
        }
        Ok(AllowList {
            hosts,
            key_envs: key_envs.to_vec(),
        })
    }

    /// Whether either list restricts anything.
    pub fn is_restricted(&self) -> bool {
        !self.hosts.is_empty() || !self.key_envs.is_empty()
    }

    /// Refuses a key variable that is not on the list.
    pub fn check_key_env(&self, scenario: &str, var: &str) -> Result<(), LlmError> {
        if self.key_envs.is_empty() || self.key_envs.iter().any(|k| k == var) {
            return Ok(());
        }
        Err(LlmError::KeyEnvNotAllowed {
            scenario: scenario.to_string(),
            var: var.to_string(),
            allowed: self.key_envs.join(", "),
        })
    }

    /// Refuses a URL whose host (and port) is not on the list.
    pub fn check_url(&self, scenario: &str, url: &reqwest::Url) -> Result<(), LlmError> {
        if self.hosts.is_empty() {
            return Ok(());
        }
        let host = url.host_str().unwrap_or("");
        let port = url.port_or_known_default();
        if self
            .hosts
            .iter()
            .any(|r| r.host == host && r.port.is_none_or(|p| Some(p) == port))
        {
            return Ok(());
        }
        let allowed: Vec<String> = self
            .hosts
            .iter()
            .map(|r| match r.port {
                Some(p) => format!("{}:{p}", r.host),
                None => r.host.clone(),
            })
            .collect();
        Err(LlmError::HostNotAllowed {
            scenario: scenario.to_string(),
            host: match port {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            },
            allowed: allowed.join(", "),
        })
    }
}

fn parse_rule(rule: &str) -> Result<HostRule, LlmError> {
    let bad = |reason: &str| LlmError::BadAllowRule {
        rule: rule.to_string(),
        reason: reason.to_string(),
    };
    if rule.is_empty() || rule.contains(['/', '@', '?', '#']) || rule.contains("://") {
        return Err(bad("write HOST or HOST:PORT, without a scheme or path"));
    }
    // The port is explicit text after the last ':' that follows the host
    // (after `]` for IPv6); `Url` would drop a default port such as 80.
    let (host, port) = match rule.rfind(':') {
        Some(i) if !rule[..i].contains(':') || rule[..i].ends_with(']') => {
            let port = rule[i + 1..]
                .parse::<u16>()
                .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
            (&rule[..i], Some(port))
        }
        _ => (rule, None),
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(bad("write IPv6 addresses in brackets, e.g. [::1]:8000"));
    }
    let url = reqwest::Url::parse(&format!("http://{host}/")).map_err(|e| bad(&e.to_string()))?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?;
    Ok(HostRule {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn hosts_match_with_or_without_port() {
        let a = AllowList::new(
            &["API.example.com".into(), "127.0.0.1:8000".into(), "[::1]:80".into()],
            &[],
        )
        .unwrap();
        assert!(a.check_url("s", &url("https://api.example.com/v1")).is_ok());
        assert!(a.check_url("s", &url("http://api.example.com:9/v1")).is_ok());
        assert!(a.check_url("s", &url("http://127.0.0.1:8000/v1")).is_ok());
        assert!(a.check_url("s", &url("http://[::1]/v1")).is_ok(), "80 from the scheme");
        let e = a.check_url("s", &url("http://127.0.0.1:8001/v1")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("127.0.0.1:8001") && text.contains("--allow-host"),
            "{text}"
        );
        assert!(a.check_url("s", &url("http://evil.example.com/")).is_err());
        assert!(a.check_url("s", &url("http://api.example.com.evil/")).is_err());
    }

    #[test]
    fn key_envs_and_bad_rules() {
        let a = AllowList::new(&[], &["OPENAI_API_KEY".into()]).unwrap();
        assert!(a.check_key_env("s", "OPENAI_API_KEY").is_ok());
        let e = a.check_key_env("s", "AWS_SECRET_ACCESS_KEY").unwrap_err().to_string();
        assert!(
            e.contains("AWS_SECRET_ACCESS_KEY") && e.contains("--allow-key-env"),
            "{e}"
        );
        assert!(a.check_url("s", &url("http://anything/")).is_ok(), "no host list");
        for rule in ["http://h", "h/x", "", "::1", "h:port", "h:70000"] {
            assert!(AllowList::new(&[rule.into()], &[]).is_err(), "{rule}");
        }
        assert!(AllowList::new(&[], &["A=B".into()]).is_err());
        assert!(!AllowList::any().is_restricted());
    }
}
