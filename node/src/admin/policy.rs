//! `GET /_tocsin/admin/policy/plan` and `POST /_tocsin/admin/policy/apply`: the node policy's
//! changes against what the node has, and performing them (see `policy::provision`).

use std::sync::Arc;

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, Uri};
use tocsin_policies::NodePolicy;

use crate::{
    Services,
    error::{Error, Result},
    policy::provision::{self, PlanView},
};

fn loaded_policy(services: &Services) -> Result<Arc<NodePolicy>> {
    services
        .policy
        .policy()
        .ok_or_else(|| Error::not_found("this node has no node policy loaded (config key `policy`)"))
}

fn json(value: &impl serde::Serialize) -> Result<Response> {
    let body = serde_json::to_string(value).map_err(Error::internal)?;
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn plan(State(services): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    super::require_operator(&services, &headers, &uri)?;
    let policy = loaded_policy(&services)?;
    let current = provision::current_state(&services, &policy).await?;
    let mut conflicts: Vec<String> = provision::wrong_server(&services, &policy).into_iter().collect();
    conflicts.extend(tocsin_policies::conflicts(&policy, &current));
    json(&PlanView {
        server_name: services.server_name.to_string(),
        changes: tocsin_policies::plan(&policy, &current).iter().map(ToString::to_string).collect(),
        conflicts,
    })
}

pub async fn apply(State(services): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    // The operator token too: on a fresh node, the policy is what makes the first accounts.
    let caller = super::require_operator(&services, &headers, &uri)?;
    let policy = loaded_policy(&services)?;
    tracing::info!(by = %caller.name(), "policy apply requested");
    json(&provision::apply(&services, &policy).await?)
}
