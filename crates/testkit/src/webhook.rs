//! A notification receiver: a local HTTP server that keeps the body of every POST to one path
//! (a Slack incoming webhook's stand-in, its token in the path) and answers 200. Any other path
//! gets 404, so a URL that lost its token is noticed.
//!
//! ```no_run
//! # async fn f() {
//! let hook = litemaas_testkit::Webhook::start("/services/T0/B0/token").await.unwrap();
//! // … run something with LITEMAAS_NOTIFY_URL=hook.url() …
//! assert_eq!(hook.bodies().len(), 1);
//! # }
//! ```

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The receiver; it serves until the test's runtime ends.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Webhook {
    /// Serves POSTs to `path` (starting with `/`) on a free loopback port.
    ///
    /// # Errors
    /// No port could be bound.
    pub async fn start(path: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the webhook receiver")?;
        let url = format!("http://{}{path}", listener.local_addr()?);
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (seen, path) = (bodies.clone(), path.to_owned());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, path) = (seen.clone(), path.clone());
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, path) = (seen.clone(), path.clone());
                        async move {
                            let wanted = req.method() == Method::POST && req.uri().path() == path;
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let status = match body {
                                Ok(body) if wanted => {
                                    seen.lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .push(String::from_utf8_lossy(&body).into_owned());
                                    StatusCode::OK
                                }
                                Ok(_) => StatusCode::NOT_FOUND,
                                Err(_) => StatusCode::BAD_REQUEST,
                            };
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Ok(Self { url, bodies })
    }

    /// The URL to POST to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bodies received so far, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
