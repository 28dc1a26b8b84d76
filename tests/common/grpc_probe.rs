//! Calls every method of a microchat gRPC server the way a stranger on the network would:
//! raw HTTP/2 gRPC, the method's path from the compiled descriptors, an empty request,
//! and whatever `authorization` the caller chooses. What comes back is the guard's
//! answer, before any handler runs.

use platform::service_auth::{Service, ServiceKeys};
use prost::{Message, bytes::Buf};
use tonic::{
    Code, Request,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

/// The protobuf service each microchat gRPC server serves.
pub fn proto_service(service: Service) -> &'static str {
    platform::service_auth::policy::of(service)
        .unwrap_or_else(|| panic!("{service} serves no gRPC"))
        .service
}

/// Every method's path of the protobuf service `full_name`, e.g.
/// `/microchat.chat.v1.Chat/SendMessage`.
pub fn method_paths(full_name: &str) -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)
        .expect("the build embeds a valid descriptor set");
    set.file
        .iter()
        .flat_map(|file| {
            file.service.iter().filter(move |service| {
                format!("{}.{}", file.package(), service.name()) == full_name
            })
        })
        .flat_map(|service| &service.method)
        .map(|method| format!("/{full_name}/{}", method.name()))
        .collect()
}

/// A token for `audience` signed with `caller`'s key in `keys`.
pub fn token(keys: &ServiceKeys, caller: Service, audience: Service) -> String {
    let now = chrono::Utc::now().timestamp();
    keys.identity(caller)
        .expect("the keys hold the caller's")
        .token(audience, now)
}

/// Calls `path` at `url` with an empty request, sending `Bearer <token>` if given, and
/// returns the status code of the answer.
pub async fn call(url: &str, path: &str, token: Option<&str>) -> Code {
    let channel = Channel::from_shared(url.to_owned())
        .expect("a valid URL")
        .connect()
        .await
        .expect("the server accepts connections");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("the connection is ready");
    let mut request = Request::new(Vec::new());
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ASCII"),
        );
    }
    let path = PathAndQuery::try_from(path).expect("a valid path");
    match grpc.unary(request, path, Raw).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The status of every method of `service` at `url`, called with `token`.
pub async fn call_every_method(
    url: &str,
    service: Service,
    token: Option<&str>,
) -> Vec<(String, Code)> {
    let mut answers = Vec::new();
    for path in method_paths(proto_service(service)) {
        let code = call(url, &path, token).await;
        answers.push((path, code));
    }
    assert!(!answers.is_empty(), "{service} has methods");
    answers
}

/// The methods among `answers` that did not answer `expected`.
pub fn not_answering(answers: &[(String, Code)], expected: Code) -> Vec<&(String, Code)> {
    answers
        .iter()
        .filter(|(_, code)| *code != expected)
        .collect()
}

/// Bytes in, bytes out: the request's content does not matter to the guard.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buffer: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(buffer, &item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut bytes = vec![0; buffer.remaining()];
        buffer.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}
