//! [`MethodKinds`]: which methods answer with a single message, so the
//! auth layer does not wrap their responses.
//!
//! A server- or bidi-streaming response is bound to the token that opened
//! the call: it ends when the token expires or is revoked. A unary or
//! client-streaming method sends one message, which the layer never
//! replaces, so wrapping its body would cost an allocation per call and
//! cut nothing. Methods the layer was not told about are wrapped.
//!
//! ```
//! # fn example(verifier: auth_interceptor::Verifier, descriptors: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use auth_interceptor::{AuthLayer, MethodKinds, MethodPolicy};
//!
//! // `descriptors`: the FileDescriptorSet tonic-prost-build writes for reflection.
//! let layer = AuthLayer::new(verifier, MethodPolicy::new())
//!     .method_kinds(MethodKinds::from_file_descriptor_set(descriptors)?);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

use std::{collections::HashSet, sync::Arc};

/// The exact paths (`/package.Service/Method`) of unary and
/// client-streaming methods. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MethodKinds(Arc<HashSet<Box<str>, ahash::RandomState>>);

impl MethodKinds {
    /// No method known: every response is wrapped.
    pub fn new() -> Self {
        Self::default()
    }

    /// `path` answers with a single message (unary or client-streaming).
    #[must_use]
    pub fn single_response(mut self, path: impl Into<Box<str>>) -> Self {
        Arc::make_mut(&mut self.0).insert(path.into());
        self
    }

    /// Every method of every service in an encoded `FileDescriptorSet` (the
    /// one `tonic-prost-build` writes for reflection), by its declared kind.
    ///
    /// # Errors
    /// [`prost::DecodeError`] when the bytes are not a descriptor set.
    pub fn from_file_descriptor_set(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(bytes)?;
        let mut kinds = Self::new();
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in service.method.iter().filter(|m| !m.server_streaming()) {
                    kinds = kinds.single_response(if package.is_empty() {
                        format!("/{}/{}", service.name(), method.name())
                    } else {
                        format!("/{package}.{}/{}", service.name(), method.name())
                    });
                }
            }
        }
        Ok(kinds)
    }

    /// Whether `path` is known to answer with a single message.
    pub fn is_single_response(&self, path: &str) -> bool {
        self.0.contains(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_methods_with_one_response_message_are_single() {
        use prost::Message;
        use prost_types::{
            FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
        };
        let method = |name: &str, client: bool, server: bool| MethodDescriptorProto {
            name: Some(name.into()),
            client_streaming: Some(client),
            server_streaming: Some(server),
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                package: Some("demo.v1".into()),
                service: vec![ServiceDescriptorProto {
                    name: Some("Stock".into()),
                    method: vec![
                        method("Get", false, false),
                        method("Upload", true, false),
                        method("Watch", false, true),
                        method("Chat", true, true),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let kinds = MethodKinds::from_file_descriptor_set(&set.encode_to_vec()).expect("decode");
        assert!(kinds.is_single_response("/demo.v1.Stock/Get"));
        assert!(kinds.is_single_response("/demo.v1.Stock/Upload"));
        assert!(!kinds.is_single_response("/demo.v1.Stock/Watch"));
        assert!(!kinds.is_single_response("/demo.v1.Stock/Chat"));
        assert!(!kinds.is_single_response("/demo.v1.Stock/Unknown"));
        assert!(MethodKinds::from_file_descriptor_set(b"\xff\xff").is_err());
    }
}
