//! Registers ruma endpoint types on an axum router under every path the spec gives them.

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::BytesMut;
use futures_util::FutureExt;
use ruma::api::{IncomingRequest, OutgoingResponse, path_builder::PathBuilder};

use super::{Ruma, extract::Prepare, log::redacted_uri};
use crate::{Services, error::Error};

/// A router that knows how to mount ruma endpoints.
pub struct EndpointRouter {
    router: Router<Arc<Services>>,
}

impl Default for EndpointRouter {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointRouter {
    pub fn new() -> Self {
        Self { router: Router::new() }
    }

    /// Mounts `handler` for endpoint `T` on all of `T`'s paths (r0, v3, unstable ...).
    pub fn ruma<T, F, Fut>(self, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        F: Fn(Arc<Services>, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T::OutgoingResponse, Error>> + Send + 'static,
    {
        self.ruma_as::<T, T::OutgoingResponse, F, Fut>(handler)
    }

    /// Like [`Self::ruma`], for a handler that answers with its own response type (one that
    /// serialises differently from ruma's).
    pub fn ruma_as<T, R, F, Fut>(self, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        R: OutgoingResponse + 'static,
        F: Fn(Arc<Services>, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
    {
        self.mount::<T, R, F, Fut>(handler, None)
    }

    /// Like [`Self::ruma`], with `prepare` checking or fixing the JSON body before ruma parses it.
    pub fn ruma_prepared<T, F, Fut>(self, prepare: Prepare, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        F: Fn(Arc<Services>, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T::OutgoingResponse, Error>> + Send + 'static,
    {
        self.mount::<T, T::OutgoingResponse, F, Fut>(handler, Some(prepare))
    }

    fn mount<T, R, F, Fut>(mut self, handler: F, prepare: Option<Prepare>) -> Self
    where
        T: IncomingRequest + Send + 'static,
        R: OutgoingResponse + 'static,
        F: Fn(Arc<Services>, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
    {
        let filter = method_filter(&T::METHOD);
        // An empty state key arrives as a trailing slash, which a `{state_key}` segment does not
        // match; mount that form too (the extractor supplies the empty argument). The spec makes
        // the trailing slash optional when the state key is empty, so mount the slash-less form
        // as well: without it `PUT .../state/m.room.name` fell through to 404 M_UNRECOGNIZED.
        let builder = T::PATH_BUILDER;
        let paths: Vec<String> = builder
            .all_paths()
            .flat_map(|path| {
                let empty_key = path.strip_suffix("{state_key}");
                let forms = empty_key.map(|p| [p.to_owned(), p.trim_end_matches('/').to_owned()]);
                std::iter::once(path.to_owned()).chain(forms.into_iter().flatten())
            })
            .collect();
        for path in paths {
            let handler = handler.clone();
            self.router = self.router.route(
                &path,
                on(filter, move |State(services): State<Arc<Services>>, req: axum::extract::Request| {
                    let handler = handler.clone();
                    async move {
                        match Ruma::<T>::extract(req, &services, prepare).await {
                            Ok(req) => respond(handler(services, req).await),
                            Err(e) => e.into_response(),
                        }
                    }
                }),
            );
        }
        self
    }

    /// Mounts a plain axum route, for the few endpoints ruma does not model.
    pub fn raw(mut self, path: &str, method_router: axum::routing::MethodRouter<Arc<Services>>) -> Self {
        self.router = self.router.route(path, method_router);
        self
    }

    pub fn into_router(self) -> Router<Arc<Services>> {
        // Without this axum answers a known path with the wrong method by an empty 405; the spec
        // wants a JSON error there too (405 `M_UNRECOGNIZED`).
        self.router.method_not_allowed_fallback(method_not_allowed).layer(axum::middleware::from_fn(catch_panic))
    }
}

fn method_filter(method: &Method) -> MethodFilter {
    match *method {
        Method::GET => MethodFilter::GET.or(MethodFilter::HEAD),
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        Method::PATCH => MethodFilter::PATCH,
        _ => MethodFilter::GET,
    }
}

fn respond<R: OutgoingResponse>(result: Result<R, Error>) -> Response {
    match result {
        Ok(r) => match r.try_into_http_response::<BytesMut>() {
            Ok(resp) => resp.map(|b| axum::body::Body::from(b.freeze())),
            Err(e) => Error::internal(e).into_response(),
        },
        Err(e) => e.into_response(),
    }
}

/// 405 `M_UNRECOGNIZED` for a known path called with a method it does not take.
async fn method_not_allowed(method: Method, uri: http::Uri) -> Response {
    tracing::debug!(%method, uri = %redacted_uri(&uri), "method not allowed");
    Error::MethodNotAllowed.into_response()
}

/// 404 `M_UNRECOGNIZED` for any path no endpoint claims.
pub async fn unrecognized(uri: http::Uri) -> Response {
    tracing::debug!(uri = %redacted_uri(&uri), "unrecognized endpoint");
    Error::Unrecognized.into_response()
}

/// A panic while answering a request becomes 500 `M_UNKNOWN` (the client gets an answer, not a
/// dropped connection) and an error log naming the route; never the query, which may hold a
/// token.
pub async fn catch_panic(req: axum::extract::Request, next: Next) -> Response {
    let route = req.uri().path().to_owned();
    let method = req.method().clone();
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|m| (*m).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            tracing::error!(%method, %route, panic = %message, "a request handler panicked");
            Error::internal("a request handler panicked").into_response()
        }
    }
}

/// Browsers (Element Web) need CORS on every Matrix endpoint; preflights are answered here.
pub async fn cors(req: axum::extract::Request, next: Next) -> Response {
    let preflight = req.method() == Method::OPTIONS;
    let mut response = if preflight { ().into_response() } else { next.run(req).await };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::future::IntoFuture;

    use super::EndpointRouter;
    use crate::{Config, Services};

    async fn handler_with_a_bug() -> &'static str {
        panic!("a handler bug")
    }

    /// Every router built by `EndpointRouter` answers a panicking handler with 500 `M_UNKNOWN`
    /// instead of dropping the connection, and keeps serving.
    #[tokio::test]
    async fn a_panic_is_answered_with_500() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            server_name: "panic.test".to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            federation_listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let services = Services::open(config).unwrap();
        let app = EndpointRouter::new()
            .raw("/boom", axum::routing::get(handler_with_a_bug))
            .raw("/fine", axum::routing::get(|| async { "fine" }))
            .into_router()
            .with_state(services);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(axum::serve(listener, app).into_future());
        let response = reqwest::get(format!("http://{addr}/boom")).await.expect("an answer, not a dropped connection");
        assert_eq!(response.status(), 500);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"errcode": "M_UNKNOWN", "error": "internal server error"}));
        let response = reqwest::get(format!("http://{addr}/fine")).await.unwrap();
        assert_eq!(response.text().await.unwrap(), "fine");
        server.abort();
    }
}
