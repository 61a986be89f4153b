//! The server side of `atelet.AteomHerder`, written by hand (no codegen):
//! a stand-in implements [`AteomHerder`] and serves it with
//! [`AteomHerderServer`] on a tonic server. Unknown methods answer
//! `UNIMPLEMENTED`, as any gRPC server does.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{http, Body, StdError};
use tonic::{Request, Response, Status};

use crate::{Empty, RunRequest, SnapshotRequest, SERVICE};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a node agent does for each call.
#[async_trait::async_trait]
pub trait AteomHerder: Send + Sync + 'static {
    /// `Run`.
    async fn run(self: Arc<Self>, req: RunRequest) -> Result<(), Status>;
    /// `Checkpoint`.
    async fn checkpoint(self: Arc<Self>, req: SnapshotRequest) -> Result<(), Status>;
    /// `Restore`.
    async fn restore(self: Arc<Self>, req: SnapshotRequest) -> Result<(), Status>;
}

/// `service` as a tonic service (`Server::builder().add_service(..)`).
pub struct AteomHerderServer<T> {
    inner: Arc<T>,
}

impl<T> AteomHerderServer<T> {
    /// Serves `inner`.
    pub fn new(inner: Arc<T>) -> Self {
        AteomHerderServer { inner }
    }
}

impl<T> Clone for AteomHerderServer<T> {
    fn clone(&self) -> Self {
        AteomHerderServer {
            inner: self.inner.clone(),
        }
    }
}

impl<T> tonic::server::NamedService for AteomHerderServer<T> {
    const NAME: &'static str = SERVICE;
}

/// One method: the request type and the handler.
struct Method<T, Req> {
    inner: Arc<T>,
    handler: fn(Arc<T>, Req) -> BoxFuture<Result<(), Status>>,
    _req: PhantomData<fn(Req)>,
}

impl<T: Send + Sync + 'static, Req: Send + 'static> tonic::server::UnaryService<Req>
    for Method<T, Req>
{
    type Response = Empty;
    type Future = BoxFuture<Result<Response<Empty>, Status>>;
    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let fut = (self.handler)(self.inner.clone(), request.into_inner());
        Box::pin(async move { fut.await.map(|()| Response::new(Empty {})) })
    }
}

fn method<T: AteomHerder, Req, B>(
    inner: Arc<T>,
    handler: fn(Arc<T>, Req) -> BoxFuture<Result<(), Status>>,
    req: http::Request<B>,
) -> BoxFuture<Result<http::Response<tonic::body::Body>, Infallible>>
where
    Req: prost::Message + Default + Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    Box::pin(async move {
        let m = Method {
            inner,
            handler,
            _req: PhantomData,
        };
        let codec = tonic_prost::ProstCodec::<Empty, Req>::default();
        Ok(tonic::server::Grpc::new(codec).unary(m, req).await)
    })
}

impl<T, B> tonic::codegen::Service<http::Request<B>> for AteomHerderServer<T>
where
    T: AteomHerder,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        match req.uri().path().strip_prefix(&format!("/{SERVICE}/")) {
            Some("Run") => method(inner, |t, r| t.run(r), req),
            Some("Checkpoint") => method(inner, |t, r| t.checkpoint(r), req),
            Some("Restore") => method(inner, |t, r| t.restore(r), req),
            _ => Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            }),
        }
    }
}
