//! `make demo` and the end-to-end tests: the whole chain on one machine, no AWS account.
//!
//! moto holds the stack as infra/template.yaml defines it; the simulated VPC mirrors moto's
//! instances and ENIs; an AttachNetworkInterface call on moto is followed by the CloudTrail
//! record published with PutEvents, the stack's rule delivers it (to a queue, since moto cannot
//! invoke a Lambda), the built Lambda binary decides and sends the SSM command, and an SSM Agent
//! stand-in runs the deployed document in the instance's namespace. The Python helpers
//! (tests/demo/) speak to moto with boto3 and reuse tests/stack/ and infra/ as they are.

mod aws_side;
mod error;
mod flow;
pub mod interrupt;
mod lambda;
mod py;
mod ssm_agent;
mod timeline;
mod world;

pub use error::{Result, Step, StepError};
pub use flow::{run, send_apply, Summary, ENI_IP, INSTANCE_IP};
pub use ssm_agent::CommandRun;
pub use timeline::Timeline;
pub use world::{
    Attached, MotoEni, Node, Options, Stack, StackSource, World, CLIENT_IP, SUBNETS, VPC_CIDR,
};
