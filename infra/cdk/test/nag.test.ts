// cdk-nag's AWS Solutions rules pass on every configuration, each acknowledged finding carrying
// its reason in src/index.ts; and the check is awake: an unacknowledged finding fails the synth.
import { Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sns from 'aws-cdk-lib/aws-sns';
import { AwsSolutionsChecks } from 'cdk-nag';
import { Symroute, SymrouteProps } from '../src';
import { ARM, newStack, X86 } from './helpers';

function checked(props: (stack: any) => Partial<SymrouteProps>, extra?: (stack: any, symroute: Symroute) => void) {
  const { app, stack, code } = newStack();
  const symroute = new Symroute(stack, 'Symroute', { agentSha256X8664: X86, agentSha256Aarch64: ARM, code, ...props(stack) });
  extra?.(stack, symroute);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return () => app.synth();
}

test.each([
  ['defaults', () => ({})],
  ['every option', (stack: any) => ({
    createTrail: true, association: { tagKey: 'symroute' }, agentReadOrganizationId: 'o-abcdefghij',
    alarmTopic: sns.Topic.fromTopicArn(stack, 'Ops', 'arn:aws:sns:eu-west-1:123456789012:ops'),
  })],
  ['a central bucket, disabled', (stack: any) => ({ enabled: false, agentBucket: s3.Bucket.fromBucketName(stack, 'C', 'central-agents') })],
])('AWS Solutions rules pass: %s', (_name, props) => {
  expect(checked(props)).not.toThrow();
});

test('the check is awake: a wildcard grant nobody acknowledged fails the synth', () => {
  const synth = checked(() => ({}), (stack, symroute) => {
    const role = new iam.Role(stack, 'InstanceRole', { assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com') });
    symroute.grantAgentRead(role);
  });
  expect(synth).toThrow(/InstanceRole\/DefaultPolicy[\s\S]*AwsSolutions-IAM5\[Resource::<SymrouteArtifactBucket\w+\.Arn>\/agent\/\*\]/);
});
