// What the construct declares, read from the synthesized template (CDK's assertions module).
import * as fs from 'fs';
import * as path from 'path';
import { Duration } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sns from 'aws-cdk-lib/aws-sns';
import { ConnmarkMode, Symroute, SymrouteProps } from '../src';
import { ARM, newStack, X86 } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function synth(props: Partial<SymrouteProps> = {}) {
  const { stack, code } = newStack();
  const symroute = new Symroute(stack, 'Symroute', { agentSha256X8664: X86, agentSha256Aarch64: ARM, code, ...props });
  return { stack, symroute, template: Template.fromStack(stack) };
}

test('the document runs the agent with the digests fixed at synth time, from the release prefix', () => {
  const { template, stack } = synth();
  const [document] = Object.values(template.findResources('AWS::SSM::Document'));
  const run = document.Properties.Content.mainSteps.find((s: any) => s.name === 'runAgent');
  expect(run.inputs.runCommand).toContain(`sha_x86_64='${X86}'`);
  expect(run.inputs.runCommand).toContain(`sha_aarch64='${ARM}'`);
  const download = document.Properties.Content.mainSteps.find((s: any) => s.name === 'downloadAgent');
  const sourceInfo = JSON.stringify(stack.resolve(download.inputs.sourceInfo));
  expect(sourceInfo).toContain(`/agent/${X86}-${ARM}/`);
  expect(sourceInfo).toContain('SymrouteArtifactBucket');
  // Nothing of the document's text is left unsubstituted.
  expect(JSON.stringify(document)).not.toContain('@@');
});

test('the five rules carry the patterns of eventbridge/ and the status rule names this document', () => {
  const { template } = synth();
  const rules = Object.values(template.findResources('AWS::Events::Rule'));
  expect(rules).toHaveLength(5);
  const patterns = rules.map((r: any) => JSON.stringify(r.Properties.EventPattern));
  for (const file of ['attach-network-interface.json', 'detach-network-interface.json', 'address-change.json', 'instance-running.json']) {
    const want = JSON.parse(fs.readFileSync(path.join(ROOT, 'eventbridge', file), 'utf8'));
    expect(patterns).toContain(JSON.stringify(want));
  }
  template.hasResourceProperties('AWS::Events::Rule', {
    EventPattern: { detail: { 'document-name': [{ Ref: Match.stringLikeRegexp('^SymrouteDocument') }] } },
    State: 'ENABLED',
  });
});

test('enabled: false keeps every rule disabled and the association absent', () => {
  const { template } = synth({ enabled: false, association: { tagKey: 'symroute' } });
  for (const rule of Object.values(template.findResources('AWS::Events::Rule'))) {
    expect((rule as any).Properties.State).toBe('DISABLED');
  }
  template.resourceCountIs('AWS::SSM::Association', 0);
});

test('onHostTrigger and connmark reach both senders of apply: the Lambda and the association', () => {
  const env = (t: Template) => (Object.values(t.findResources('AWS::Lambda::Function'))[0] as any).Properties.Environment.Variables;
  const params = (t: Template) => (Object.values(t.findResources('AWS::SSM::Association'))[0] as any).Properties.Parameters;
  const defaults = synth({ association: { tagKey: 'symroute' } }).template;
  expect([env(defaults).SYMROUTE_ON_HOST_TRIGGER, env(defaults).SYMROUTE_CONNMARK]).toEqual(['true', 'keep']);
  expect(params(defaults)).toEqual({ action: ['apply'], target: ['all'], onHostTrigger: ['true'], connmark: ['keep'] });
  const chosen = synth({ association: { tagKey: 'symroute' }, onHostTrigger: false, connmark: ConnmarkMode.ON }).template;
  expect([env(chosen).SYMROUTE_ON_HOST_TRIGGER, env(chosen).SYMROUTE_CONNMARK]).toEqual(['false', 'on']);
  expect(params(chosen)).toMatchObject({ onHostTrigger: ['false'], connmark: ['on'] });
  // Every value the construct can send is one the document accepts.
  const [document] = Object.values(chosen.findResources('AWS::SSM::Document')) as any[];
  const declared = document.Properties.Content.parameters;
  expect(declared.connmark.allowedValues).toEqual(Object.values(ConnmarkMode));
  expect(declared.onHostTrigger.allowedValues).toEqual(['true', 'false']);
});

test('the Lambda role has exactly the template\'s policy and no managed policy', () => {
  const { template } = synth();
  const [role] = Object.values(template.findResources('AWS::IAM::Role'));
  expect(role.Properties.ManagedPolicyArns).toBeUndefined();
  const sids = role.Properties.Policies[0].PolicyDocument.Statement.map((s: any) => s.Sid);
  expect(sids).toEqual(['Logs', 'Describe', 'TagEnisWithOwnKeysOnly', 'SendOurDocumentToInstances', 'OnFailureDestination']);
  // The failure destination grants nothing extra: no separate policy resource exists.
  template.resourceCountIs('AWS::IAM::Policy', 0);
});

test('a central bucket: no bucket of our own, the document reads from the named one', () => {
  const { stack } = newStack();
  const { code } = newStack();
  const symroute = new Symroute(stack, 'Symroute', {
    agentSha256X8664: X86, agentSha256Aarch64: ARM, code,
    agentBucket: s3.Bucket.fromBucketName(stack, 'Central', 'central-agents'),
  });
  const template = Template.fromStack(stack);
  template.resourceCountIs('AWS::S3::Bucket', 0);
  expect(JSON.stringify(template.toJSON())).toContain('central-agents/agent/');
  expect(symroute.agentBucket.bucketName).toBe('central-agents');
});

test('an alarm topic is notified by the failure alarm', () => {
  const { stack, code } = newStack();
  new Symroute(stack, 'Symroute', {
    agentSha256X8664: X86, agentSha256Aarch64: ARM, code,
    alarmTopic: sns.Topic.fromTopicArn(stack, 'Ops', 'arn:aws:sns:eu-west-1:123456789012:ops'),
  });
  Template.fromStack(stack).hasResourceProperties('AWS::CloudWatch::Alarm', {
    AlarmActions: ['arn:aws:sns:eu-west-1:123456789012:ops'],
    MetricName: 'NumberOfMessagesSent',
    Threshold: 1,
  });
});

test('grantAgentRead lets a role get agent/* and list only that prefix', () => {
  const { stack, code } = newStack();
  const symroute = new Symroute(stack, 'Symroute', { agentSha256X8664: X86, agentSha256Aarch64: ARM, code });
  const role = new iam.Role(stack, 'InstanceRole', { assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com') });
  symroute.grantAgentRead(role);
  const [policy] = Object.values(Template.fromStack(stack).findResources('AWS::IAM::Policy'));
  const statements = stack.resolve(policy.Properties.PolicyDocument.Statement);
  expect(statements).toHaveLength(2);
  expect(statements[0].Action).toBe('s3:GetObject');
  expect(JSON.stringify(statements[0].Resource)).toContain('/agent/*');
  expect(statements[1].Action).toBe('s3:ListBucket');
  expect(statements[1].Condition).toEqual({ StringLike: { 's3:prefix': ['agent/*'] } });
});

describe('props outside the template\'s bounds are refused at synth time, in one line', () => {
  const cases: [string, Partial<SymrouteProps>, RegExp][] = [
    ['an uppercase digest', { agentSha256X8664: 'A'.repeat(64) }, /agentSha256X8664 must be 64 lowercase hex digits/],
    ['a short digest', { agentSha256Aarch64: 'b'.repeat(63) }, /agentSha256Aarch64 must be 64 lowercase hex digits/],
    ['a timeout under 30 s', { commandTimeout: Duration.seconds(29) }, /commandTimeout must be whole seconds from 30 to 3600, got 29 seconds/],
    ['a timeout over an hour', { commandTimeout: Duration.minutes(61) }, /commandTimeout must be whole seconds from 30 to 3600/],
    ['a bad organization id', { agentReadOrganizationId: 'org-1' }, /agentReadOrganizationId must be an Organizations id/],
    ['a marker that is neither tag nor description', { ownerMarkers: ['vpc-cni'] }, /ownerMarkers must be `tag:<key>` or `description:<prefix>`/],
    ['a marker with a comma', { ownerMarkers: ['tag:a,b'] }, /ownerMarkers must be/],
    ['a skip tag with a newline', { skipTag: 'a\nb' }, /skipTag must be 1 to 128/],
    ['a schedule that is not rate or cron', { association: { tagKey: 'k', schedule: 'daily' } }, /association.schedule must be rate\(...\) or cron\(...\)/],
  ];
  test.each(cases)('%s', (_name, props, message) => {
    expect(() => synth(props)).toThrow(message);
    try { synth(props); } catch (error: any) { expect(error.message).not.toContain('\n'); }
  });

  test('an organization id with a central bucket (that bucket\'s policy is not ours)', () => {
    const { stack, code } = newStack();
    expect(() => new Symroute(stack, 'Symroute', {
      agentSha256X8664: X86, agentSha256Aarch64: ARM, code, agentReadOrganizationId: 'o-abcdefghij',
      agentBucket: s3.Bucket.fromBucketName(stack, 'Central', 'central-agents'),
    })).toThrow(/agentReadOrganizationId applies to the bucket this construct creates/);
  });
});
