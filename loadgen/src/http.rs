//! One keep-alive HTTP/1.1 connection, driven by hand.
//!
//! A pooled client would add a lock and a lookup to every request; a load client owns
//! exactly one connection, so it holds hyper's `SendRequest` directly.

use crate::target::LoopbackUrl;
use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Longest wait for a TCP connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request body: whole, possibly empty.
pub type Body = Full<Bytes>;

/// An open HTTP/1.1 connection to a loopback server.
pub struct Connection {
    sender: SendRequest<Body>,
    driver: JoinHandle<()>,
    host: HeaderValue,
}

impl Connection {
    /// Opens a TCP connection (Nagle off) to `target` and starts HTTP/1.1 on it.
    pub async fn open(target: &LoopbackUrl) -> Result<Self> {
        let addr = target.addr();
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection's own errors reach the caller through `sender`.
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            driver,
            host: target.host_header(),
        })
    }

    /// Whether the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends `request` (adding `Host`) once the previous response is done; the body is the caller's to read.
    pub async fn send(&mut self, mut request: Request<Body>) -> Result<Response<Incoming>> {
        request.headers_mut().insert(HOST, self.host.clone());
        self.sender.ready().await.context("the connection closed")?;
        Ok(self.sender.send_request(request).await?)
    }

    /// POSTs `body` as JSON to `uri` and reads the whole answer.
    pub async fn post_json(
        &mut self,
        uri: Uri,
        body: &serde_json::Value,
    ) -> Result<(StatusCode, Bytes)> {
        let mut request = Request::new(Full::new(Bytes::from(serde_json::to_vec(body)?)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let response = self.send(request).await?;
        let status = response.status();
        Ok((status, read_body(response.into_body()).await?))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Reads a whole response body.
pub async fn read_body(body: Incoming) -> Result<Bytes> {
    Ok(body.collect().await?.to_bytes())
}

/// Reads a response body to its end without keeping it, so the connection can be reused.
pub async fn discard_body(mut body: Incoming) -> Result<()> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}
