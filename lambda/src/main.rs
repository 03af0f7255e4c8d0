//! symroute's Lambda: CloudTrail ENI events and instance-running events in, SSM commands out.

mod app;
mod aws;
mod command;
mod config;
mod decide;
mod error;
mod event;
mod handler;
mod init;
mod sdk;
mod telemetry;

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_logging();
    let settings = match config::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            init::report_error(&e).await;
            return Err(e.into());
        }
    };
    let aws = sdk::Sdk::from_env(&settings).await;
    let (aws, settings) = (&aws, &settings);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        app::invoke(aws, settings, &ev.context.request_id, ev.payload).await
    }))
    .await
}
