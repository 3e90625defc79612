//! Registers ruma endpoint types on an axum router under every path the spec gives them.

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::BytesMut;
use ruma::api::{IncomingRequest, OutgoingResponse, path_builder::PathBuilder};

use super::Ruma;
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
    pub fn ruma_as<T, R, F, Fut>(mut self, handler: F) -> Self
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
                on(filter, move |State(services): State<Arc<Services>>, req: Ruma<T>| {
                    let handler = handler.clone();
                    async move { respond(handler(services, req).await) }
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
        self.router.method_not_allowed_fallback(method_not_allowed)
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
    tracing::debug!(%method, %uri, "method not allowed");
    Error::MethodNotAllowed.into_response()
}

/// 404 `M_UNRECOGNIZED` for any path no endpoint claims.
pub async fn unrecognized(uri: http::Uri) -> Response {
    tracing::debug!(%uri, "unrecognized endpoint");
    Error::Unrecognized.into_response()
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
