//! Notifications: one JSON POST to a webhook (`--notify-url`, e.g. a Slack incoming webhook or
//! an Alertmanager-style receiver) when a run fails, or succeeds with `--notify-on`.
//!
//! The URL often holds a token (Slack's webhooks do), so it is a secret: it appears in no log,
//! error or Debug output; only its scheme and host do ([`NotifyUrl::masked`]). Each attempt has
//! a timeout; connection errors, timeouts, 429 and 5xx are retried with a doubling backoff; any
//! other answer is final. HTTPS uses rustls with the aws-lc-rs provider (the one kube and the
//! AWS SDK use: a second provider would panic) and the system's roots.
//!
//! ```
//! use litemaas_cli::notify::NotifyUrl;
//!
//! let url: NotifyUrl = "https://hooks.slack.com/services/T0/B0/s3cr3t".parse().unwrap();
//! assert_eq!(url.masked(), "https://hooks.slack.com/…");
//! assert!(!format!("{url:?}").contains("s3cr3t"));
//! ```

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

/// Errors of a notification. None holds the URL's path or query.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The URL is not an http(s) URL.
    #[error("the notification URL is not an http:// or https:// URL")]
    BadUrl,
    /// The HTTPS client could not be built (no system roots).
    #[error("cannot set up HTTPS for notifications: {0}")]
    Tls(String),
    /// Every attempt failed; the last failure.
    #[error("notification to {url} failed after {attempts} attempt(s): {last}")]
    Failed {
        /// The masked URL.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's failure.
        last: String,
    },
}

/// A webhook URL, kept secret.
#[derive(Clone)]
pub struct NotifyUrl {
    url: String,
    uri: hyper::Uri,
}

impl std::fmt::Debug for NotifyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NotifyUrl({})", self.masked())
    }
}

impl std::str::FromStr for NotifyUrl {
    type Err = NotifyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uri: hyper::Uri = s.parse().map_err(|_| NotifyError::BadUrl)?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(Self {
                url: s.to_owned(),
                uri,
            }),
            _ => Err(NotifyError::BadUrl),
        }
    }
}

impl NotifyUrl {
    /// `scheme://host[:port]/…`: what may be shown.
    pub fn masked(&self) -> String {
        let port = self.uri.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{port}/…",
            self.uri.scheme_str().unwrap_or(""),
            self.uri.host().unwrap_or("")
        )
    }

    /// Replaces the URL (and its path and query) in `text` by the masked form.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.url, &self.masked());
        if let Some(pq) = self.uri.path_and_query().map(|p| p.as_str())
            && pq.len() > 1
        {
            out = out.replace(pq, "/…");
        }
        out
    }
}

/// How notifications are sent.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// Where.
    pub url: NotifyUrl,
    /// Timeout of each attempt (connecting, sending and reading the answer).
    pub timeout: Duration,
    /// Attempts in all (at least one).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each next one.
    pub backoff: Duration,
}

impl Notifier {
    /// Four attempts of 10 s each, 1 s, 2 s, 4 s apart.
    pub fn new(url: NotifyUrl) -> Self {
        Self {
            url,
            timeout: Duration::from_secs(10),
            attempts: 4,
            backoff: Duration::from_secs(1),
        }
    }

    /// POSTs `body` as JSON until an attempt gets a 2xx answer.
    ///
    /// # Errors
    /// [`NotifyError::Failed`] with the last attempt's failure; nothing in it shows the URL's
    /// path or query.
    pub async fn send(&self, body: &serde_json::Value) -> Result<(), NotifyError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| NotifyError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<Bytes>>(https);
        let body = Bytes::from(body.to_string());
        let mut wait = self.backoff;
        let mut last = String::new();
        let attempts = self.attempts.max(1);
        for attempt in 1..=attempts {
            let request = Request::post(self.url.uri.clone())
                .header("content-type", "application/json")
                .header(
                    "user-agent",
                    concat!("litemaas-backup/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(body.clone()))
                .map_err(|_| NotifyError::BadUrl)?;
            let exchange = async {
                let response = client.request(request).await?;
                let status = response.status();
                // Read the answer, so a slow body counts toward the timeout too.
                let _ = response.into_body().collect().await;
                Ok::<_, hyper_util::client::legacy::Error>(status)
            };
            let retry = match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok(status)) if status.is_success() => return Ok(()),
                Ok(Ok(status)) => {
                    last = format!("the server answered {status}");
                    status.is_server_error() || status.as_u16() == 429
                }
                Ok(Err(e)) => {
                    last = self.url.scrub(&crate::error_chain(&e));
                    true
                }
                Err(_) => {
                    last = format!("no answer within {:?}", self.timeout);
                    true
                }
            };
            tracing::debug!(attempt, "notification attempt failed: {last}");
            if !retry {
                return Err(NotifyError::Failed {
                    url: self.url.masked(),
                    attempts: attempt,
                    last,
                });
            }
            if attempt < attempts {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Err(NotifyError::Failed {
            url: self.url.masked(),
            attempts,
            last,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;

    use super::*;

    const TOKEN: &str = "T000/B000/XXXXsecretXXXX";

    /// A receiver answering with `statuses` in turn (then 200), recording each body.
    async fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(statuses.into_iter()));
        let seen = bodies.clone();
        let app = Router::new().route(
            &format!("/services/{TOKEN}"),
            post(move |body: String| {
                let (seen, statuses) = (seen.clone(), statuses.clone());
                async move {
                    seen.lock().unwrap().push(body);
                    let status = statuses.lock().unwrap().next().unwrap_or(200);
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://127.0.0.1:{port}/services/{TOKEN}"), bodies)
    }

    fn notifier(url: &str) -> Notifier {
        Notifier {
            backoff: Duration::from_millis(10),
            ..Notifier::new(url.parse().unwrap())
        }
    }

    #[tokio::test]
    async fn a_500_is_retried_until_the_server_takes_the_post() {
        let (url, bodies) = receiver(vec![500, 503]).await;
        notifier(&url)
            .send(&serde_json::json!({"outcome": "failure"}))
            .await
            .unwrap();
        let bodies = bodies.lock().unwrap();
        assert_eq!(bodies.len(), 3);
        assert!(bodies.iter().all(|b| b == r#"{"outcome":"failure"}"#));
    }

    #[tokio::test]
    async fn a_400_is_final_and_the_error_shows_no_token() {
        let (url, bodies) = receiver(vec![400]).await;
        let e = notifier(&url)
            .send(&serde_json::json!({}))
            .await
            .unwrap_err();
        assert_eq!(bodies.lock().unwrap().len(), 1);
        let text = e.to_string();
        assert!(text.contains("400"), "{text}");
        assert!(text.contains("http://127.0.0.1:"), "{text}");
        assert!(
            !text.contains("secret") && !text.contains("services"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_each_attempt() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and reads, never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut n = notifier(&format!("http://127.0.0.1:{port}/x?token={TOKEN}"));
        n.timeout = Duration::from_millis(200);
        n.attempts = 2;
        let started = std::time::Instant::now();
        let e = n
            .send(&serde_json::json!({}))
            .await
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            e.contains("after 2 attempt(s): no answer within 200ms"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_and_reported_without_the_token() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/services/{TOKEN}");
        let e = notifier(&url)
            .send(&serde_json::json!({}))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("after 4 attempt(s)"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    /// HTTPS goes through rustls with the process's one provider: against a plain-HTTP server
    /// the handshake fails as an error, not a panic (two providers would panic here, since kube
    /// is in this test binary too).
    #[tokio::test]
    async fn https_builds_its_client_without_a_provider_panic() {
        let (url, bodies) = receiver(vec![]).await;
        let mut n = notifier(&url.replace("http://", "https://"));
        n.attempts = 1;
        let e = n
            .send(&serde_json::json!({}))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("after 1 attempt(s)"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert!(bodies.lock().unwrap().is_empty());
    }

    #[test]
    fn only_http_urls_are_accepted() {
        for bad in ["ftp://x/y", "hooks.slack.com/x", "http://", ""] {
            assert!(bad.parse::<NotifyUrl>().is_err(), "{bad}");
        }
    }
}
