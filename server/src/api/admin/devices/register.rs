//! `POST /v1/devices`: provision devices (JSON, or CSV lines `id,model,tag;tag`), all or none,
//! each with its own token, shown once.

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::{new_token, token_hash, Role, DEVICE_TOKEN_PREFIX};
use crate::domain::provisioning::{check_batch, DeviceNames};
use crate::store::{now_ms, NewDevice};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;

/// Parse `id,model,tags` CSV (tags separated by `;`; a header line starting with `id` is
/// skipped; blank lines ignored).
fn parse_csv(text: &str) -> Result<Vec<DeviceSpec>, ApiError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (n == 0 && line.starts_with("id,")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (id, model, tags) = match fields.as_slice() {
            [id, model] => (*id, *model, ""),
            [id, model, tags] => (*id, *model, *tags),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_csv",
                    format!("line {}: expected id,model[,tag;tag...]", n + 1),
                ))
            }
        };
        out.push(DeviceSpec {
            id: id.to_string(),
            model: model.to_string(),
            tags: tags
                .split(';')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
        });
    }
    Ok(out)
}

/// Provision devices: JSON `{"devices": [...]}` or CSV `id,model,tags`. All or none: an id that
/// exists already fails the whole request with 409.
#[utoipa::path(
    post,
    path = "/v1/devices",
    tag = "devices",
    request_body(content = RegisterDevices, description = "JSON, or text/csv lines `id,model,tag;tag`"),
    responses(
        (status = 201, description = "Provisioned; each token is shown only now", body = Registered),
        (status = 400, description = "Invalid id, model, tag or CSV", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "A device id exists already", body = ErrorBody),
        (status = 503, description = "MQTT is configured and the broker did not create the devices' accounts: nothing was registered", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub(super) async fn register_devices(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Registered>), ApiError> {
    admin.require(Role::Operator)?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let specs = if content_type.starts_with("application/json") {
        serde_json::from_slice::<RegisterDevices>(&body)?.devices
    } else if content_type.starts_with("text/csv") {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("invalid_csv", "CSV is not UTF-8"))?;
        parse_csv(text)?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected application/json or text/csv",
        ));
    };
    check_batch(specs.iter().map(|d| DeviceNames {
        id: &d.id,
        model: &d.model,
        tags: &d.tags,
    }))?;
    let mut new = Vec::with_capacity(specs.len());
    let mut out = Vec::with_capacity(specs.len());
    for d in specs {
        let token = new_token(DEVICE_TOKEN_PREFIX).map_err(ApiError::internal)?;
        new.push(NewDevice {
            id: d.id.clone(),
            model: d.model,
            tags: d.tags,
            token_hash: token_hash(&token),
        });
        out.push(ProvisionedDevice { id: d.id, token });
    }
    state
        .store
        .register_devices(&new, &admin.name, now_ms())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::AlreadyExists(what) => {
                ApiError::conflict("device_exists", format!("{what} already exists"))
            }
            other => other.into(),
        })?;
    // With MQTT, each device's broker account too: the registration stands only once the
    // broker confirmed them all (a device whose token the broker refuses could never push).
    if let Some(broker) = state.mqtt.get().filter(|b| b.provisions()) {
        let accounts: Vec<(String, String)> = out
            .iter()
            .map(|d| (d.id.clone(), d.token.clone()))
            .collect();
        if let Err(e) = broker.create_accounts(&accounts).await {
            let ids: Vec<String> = out.iter().map(|d| d.id.clone()).collect();
            if let Err(undo) = state.store.forget_devices(&ids).await {
                tracing::error!(error = %undo, "cannot undo a registration the broker refused");
            }
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                format!("nothing registered: the MQTT broker did not create the devices' accounts ({e})"),
            ));
        }
    }
    tracing::info!(actor = %admin.name, count = out.len(), "provisioned devices");
    Ok((StatusCode::CREATED, axum::Json(Registered { devices: out })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_parses_with_and_without_header_and_tags() {
        let specs = parse_csv("id,model,tags\nSL-1,f429,city:a;pole\n\nSL-2, f429\n").unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].tags, ["city:a", "pole"]);
        assert!(specs[1].tags.is_empty());
        assert_eq!(specs[1].model, "f429");
        let err = parse_csv("SL-1\n").unwrap_err();
        assert_eq!(err.code, "invalid_csv");
    }

    /// The request's rules as the handler applies them, answered as the API answers.
    fn validate(specs: &[DeviceSpec]) -> Result<(), ApiError> {
        Ok(check_batch(specs.iter().map(|d| DeviceNames {
            id: &d.id,
            model: &d.model,
            tags: &d.tags,
        }))?)
    }

    #[test]
    fn validation_names_the_problem() {
        let spec = |id: &str| DeviceSpec {
            id: id.into(),
            model: "m".into(),
            tags: vec![],
        };
        assert_eq!(validate(&[]).unwrap_err().code, "no_devices");
        assert_eq!(
            validate(&[spec("../x")]).unwrap_err().code,
            "invalid_device_id"
        );
        assert_eq!(
            validate(&[spec("a"), spec("a")]).unwrap_err().code,
            "duplicate_device_id"
        );
        let mut tagged = spec("b");
        tagged.tags = vec!["x y".into()];
        assert_eq!(validate(&[tagged]).unwrap_err().code, "invalid_tag");
    }
}
