//! What a resource says about the service that sent a batch of records.

use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::attributes::{self, ENVIRONMENT, SERVICE_NAME, SERVICE_VERSION};

/// The service name used when a resource carries none (the SDKs' own default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// The `service.name` of a resource, or [`UNKNOWN_SERVICE`].
pub fn service_name(resource: Option<&Resource>) -> String {
    let attrs = resource
        .map(|r| r.attributes.as_slice())
        .unwrap_or_default();
    attributes::find_text(attrs, SERVICE_NAME).unwrap_or_else(|| UNKNOWN_SERVICE.to_string())
}

/// Resource fields shared by every record of one `Resource*` block.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// `service.name`, or [`UNKNOWN_SERVICE`] when it is missing or empty.
    pub service_name: String,
    /// `service.version`, when present and not empty.
    pub service_version: Option<String>,
    /// The deployment environment ([`ENVIRONMENT`]), when present and not empty.
    pub environment: Option<String>,
    /// All resource attributes as JSON object text.
    pub attributes: String,
}

impl ResourceInfo {
    /// Reads a block's resource; a missing resource reads as one without attributes.
    pub fn from_resource(resource: Option<&Resource>) -> Self {
        let attrs = resource
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        Self {
            service_name: attributes::find_text(attrs, SERVICE_NAME)
                .unwrap_or_else(|| UNKNOWN_SERVICE.to_string()),
            service_version: attributes::find_text(attrs, SERVICE_VERSION),
            environment: attributes::find_text(attrs, ENVIRONMENT),
            attributes: attributes::to_json_text(attrs),
        }
    }
}
