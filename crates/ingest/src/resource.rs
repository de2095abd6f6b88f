//! What a resource says about the service that sent a batch of records.

use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::attributes::{self, ENVIRONMENT, SERVICE_NAME, SERVICE_VERSION};

/// The service name used when a resource carries none (the SDKs' own default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Resource fields shared by every record of one `Resource*` block.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub service_name: String,
    pub service_version: Option<String>,
    pub environment: Option<String>,
    /// All resource attributes as JSON object text.
    pub attributes: String,
}

impl ResourceInfo {
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
