// The example app: one stack with the Symroute construct, checked by cdk-nag's AWS Solutions
// rules (an error fails `cdk synth`). `make cdk-synth` runs it; tests/stack deploys its output
// into moto and `make demo STACK=cdk` runs the whole chain against it.
//
// Context (cdk synth -c key=value):
//   agentSha256X8664, agentSha256Aarch64  default: read from dist/agent/SHA256SUMS
//   enabled=false                        deploy with the rules off (then upload, then deploy on)
//   createTrail=true, associationTagKey=<key>, alarmTopicArn=<arn>
//   lambdaZip=<path>                     the Lambda's code (default: the zip `make lambda` built)
//   stackName                            default: symroute
import * as fs from 'fs';
import * as path from 'path';
import { App, CfnOutput, DefaultStackSynthesizer, Stack, Validations } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import { AwsSolutionsChecks } from 'cdk-nag';
import { Symroute } from '../lib';

const app = new App();
const context = (key: string): string | undefined => app.node.tryGetContext(key);

function agentDigests(): { x86: string; arm: string } {
  const given = { x86: context('agentSha256X8664'), arm: context('agentSha256Aarch64') };
  if (given.x86 && given.arm) return { x86: given.x86, arm: given.arm };
  const sums = path.join(__dirname, '..', '..', '..', 'dist', 'agent', 'SHA256SUMS');
  if (!fs.existsSync(sums)) {
    throw new Error(`no agent digests: build the agent (make agent) to write ${sums}, or pass -c agentSha256X8664=... -c agentSha256Aarch64=...`);
  }
  const digest = (file: string) => {
    const line = fs.readFileSync(sums, 'utf8').split('\n').find((l) => l.trim().endsWith(file));
    if (!line) throw new Error(`${sums} has no line for ${file}`);
    return line.split(/\s+/)[0];
  };
  return { x86: digest('symroute-linux-x86_64'), arm: digest('symroute-linux-aarch64') };
}

const digests = agentDigests();
const stack = new Stack(app, 'Symroute', {
  stackName: context('stackName') ?? 'symroute',
  description: 'symroute: secondary ENIs route symmetrically the moment they are attached (CDK)',
  // The bootstrap version check reads an SSM parameter at deploy time; the stack needs nothing
  // from the bootstrap stack but its asset bucket.
  synthesizer: new DefaultStackSynthesizer({ generateBootstrapVersionRule: false }),
});
const lambdaZip = context('lambdaZip');
const alarmTopicArn = context('alarmTopicArn');
const associationTagKey = context('associationTagKey');
const symroute = new Symroute(stack, 'Symroute', {
  agentSha256X8664: digests.x86,
  agentSha256Aarch64: digests.arm,
  enabled: context('enabled') !== 'false',
  createTrail: context('createTrail') === 'true',
  alarmTopic: alarmTopicArn ? sns.Topic.fromTopicArn(stack, 'AlarmTopic', alarmTopicArn) : undefined,
  association: associationTagKey ? { tagKey: associationTagKey } : undefined,
  code: lambdaZip ? lambda.Code.fromAsset(lambdaZip) : undefined,
});

// The SAM template's outputs, by the same names (docs/deploy.md and the tests read them).
new CfnOutput(stack, 'DocumentName', { value: symroute.documentName, description: 'The SSM document to run by hand or from State Manager.' });
new CfnOutput(stack, 'AgentBucket', { value: symroute.agentBucket.bucketName, description: 'Where the agent is uploaded: agent/<x86 sha>-<arm sha>/symroute-linux-*.' });
new CfnOutput(stack, 'InstancePolicyArn', { value: symroute.instancePolicy.managedPolicyArn, description: 'Optional for instance roles (command output to CloudWatch Logs; a central bucket).' });
new CfnOutput(stack, 'CommandLogGroupName', { value: symroute.commandLogGroup.logGroupName });
new CfnOutput(stack, 'FailureQueueUrl', { value: symroute.failureQueue.queueUrl, description: 'Events symroute could not handle.' });
new CfnOutput(stack, 'FunctionName', { value: symroute.function.functionName });

Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
