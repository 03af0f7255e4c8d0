//! Reporting a configuration error to Lambda's init-error endpoint, so the console and the
//! invocation's answer show the cause instead of a bare "Runtime exited".

use lambda_runtime::Diagnostic;
use lambda_runtime_api_client::body::Body;

use crate::error::Error;

pub async fn report_error(e: &Error) {
    tracing::error!(error_type = e.kind(), error = %e, "init failed");
    let diagnostic = Diagnostic {
        error_type: e.kind().to_string(),
        error_message: e.to_string(),
    };
    let Ok(body) = serde_json::to_vec(&diagnostic) else {
        return;
    };
    let Ok(client) = lambda_runtime_api_client::Client::builder().build() else {
        return;
    };
    let request = lambda_runtime_api_client::build_request()
        .method("POST")
        .uri("/2018-06-01/runtime/init/error")
        .header("lambda-runtime-function-error-type", "Runtime.InitError")
        .body(Body::from(body));
    if let Ok(request) = request {
        // Nothing more can be done if Lambda cannot be told; the exit code still reports failure.
        let _ = client.call(request).await;
    }
}
