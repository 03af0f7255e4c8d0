// The CDK construct and the SAM template declare the same stack: the same resources, each with
// the same properties (the IAM policies, the event patterns, the document, the Lambda's settings),
// for several sets of parameter values. What differs on purpose is named in DIFFERENCES below and
// in docs/deploy.md; anything else that differs fails here.
import { CfnResource, Duration, Stack } from 'aws-cdk-lib';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sns from 'aws-cdk-lib/aws-sns';
import { ConnmarkMode, Symroute, SymrouteProps } from '../src';
import { ARM, newStack, X86 } from './helpers';
import { canon, Context, normaliseStatements, resources, samContext, samTemplate, Template } from './canonical';

const TOPIC = 'arn:aws:sns:eu-west-1:123456789012:ops';
const ORG = 'o-abcdefghij';

interface Scenario {
  readonly name: string;
  readonly sam: Record<string, string>;
  readonly cdk: (stack: Stack) => Omit<SymrouteProps, 'code'>;
}

const SCENARIOS: Scenario[] = [
  {
    name: 'defaults',
    sam: { AgentSha256X8664: X86, AgentSha256Aarch64: ARM },
    cdk: () => ({ agentSha256X8664: X86, agentSha256Aarch64: ARM }),
  },
  {
    name: 'every option on (trail, association, alarm topic, organization)',
    sam: {
      AgentSha256X8664: X86, AgentSha256Aarch64: ARM, CreateTrail: 'true', AssociationTagKey: 'symroute',
      AssociationTagValue: 'yes', AssociationSchedule: 'rate(12 hours)', AlarmTopicArn: TOPIC,
      AgentReadOrganizationId: ORG, SkipTag: 'keep-out', OwnerMarkers: 'tag:mine,description:theirs ',
      CommandTimeoutSeconds: '900', LogRetentionDays: '90', OnHostTrigger: 'false', Connmark: 'on',
    },
    cdk: (stack) => ({
      agentSha256X8664: X86, agentSha256Aarch64: ARM, createTrail: true,
      association: { tagKey: 'symroute', tagValue: 'yes', schedule: 'rate(12 hours)' },
      alarmTopic: sns.Topic.fromTopicArn(stack, 'Topic', TOPIC),
      agentReadOrganizationId: ORG, skipTag: 'keep-out', ownerMarkers: ['tag:mine', 'description:theirs '],
      commandTimeout: Duration.seconds(900),
      logRetention: logs.RetentionDays.THREE_MONTHS,
      onHostTrigger: false, connmark: ConnmarkMode.ON,
    }),
  },
  {
    name: 'a central bucket, deployed disabled (association asked for, so absent)',
    sam: { AgentSha256X8664: X86, AgentSha256Aarch64: ARM, AgentBucketName: 'central-agents', Enabled: 'false', AssociationTagKey: 'symroute' },
    cdk: (stack) => ({
      agentSha256X8664: X86, agentSha256Aarch64: ARM, enabled: false, association: { tagKey: 'symroute' },
      agentBucket: s3.Bucket.fromBucketName(stack, 'Central', 'central-agents'),
    }),
  },
];

/** The construct's path inside the stack → the SAM logical id of the same resource. */
function samName(relative: string): string {
  const rule = /^(\w+)Rule(\/Resource)?$/.exec(relative);
  if (rule) return `Function${rule[1]}`;
  const permission = /^(\w+)Rule\/AllowEventRule/.exec(relative);
  if (permission) return `Function${permission[1]}Permission`;
  return relative.replace(/\/Resource$/, '').replace(/\//g, '');
}

function cdkSide(scenario: Scenario): { template: Template; ctx: Context } {
  const { app, stack, code } = newStack();
  const symroute = new Symroute(stack, 'Symroute', { ...scenario.cdk(stack), code });
  const template = app.synth().getStackByName(stack.stackName).template as Template;
  const names: Record<string, string> = {};
  const types: Record<string, string> = {};
  for (const node of symroute.node.findAll()) {
    if (!(node instanceof CfnResource)) continue;
    const id = stack.resolve(node.logicalId);
    names[id] = samName(node.node.path.slice(symroute.node.path.length + 1));
    types[id] = node.cfnResourceType;
  }
  return { template, ctx: { params: {}, names, types, conditions: {} } };
}

/** What differs on purpose, by resource: a function from properties to the compared properties. */
const DIFFERENCES: Record<string, (properties: any, side: 'sam' | 'cdk') => any> = {
  // The code is a stand-in on both sides; SAM tags what it creates.
  Function: ({ Code: _code, Tags: _tags, ...rest }) => rest,
  // CDK names the target; the rule's target is the same function with the same retry policy.
  ...Object.fromEntries(['Attach', 'Detach', 'Addresses', 'Running', 'CommandStatus'].map((event) => [
    `Function${event}`,
    (p: any) => ({ ...p, Targets: p.Targets.map(({ Id: _id, ...t }: any) => t) }),
  ])),
  // SAM names the function by Ref, CDK by ARN: Lambda takes either.
  ...Object.fromEntries(['Attach', 'Detach', 'Addresses', 'Running', 'CommandStatus'].map((event) => [
    `Function${event}Permission`,
    (p: any) => ({ ...p, FunctionName: '<Function>' }),
  ])),
  // Path "/" is IAM's default, which CDK writes out.
  InstancePolicy: ({ Path: path, ...rest }) => (path === '/' ? rest : { Path: path, ...rest }),
  // Dead letters from the rules: SAM allows any rule of the account (ArnLike rule/*), CDK each
  // rule by its own ARN. Compared apart in the test below.
  FailureQueuePolicy: (p: any) => ({
    ...p,
    PolicyDocument: { ...p.PolicyDocument, Statement: p.PolicyDocument.Statement.filter((s: any) => !isDeadLetterGrant(s)) },
  }),
};

function isDeadLetterGrant(statement: any): boolean {
  return JSON.stringify(statement.Principal) === JSON.stringify({ Service: ['events.amazonaws.com'] });
}

/** Scalars as CloudFormation passes them to a resource: text (1.2 and "1.2" are one value). */
function text(node: any): any {
  if (Array.isArray(node)) return node.map(text);
  if (node !== null && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, text(v)]));
  return node === undefined || node === null ? node : String(node);
}

function compared(name: string, resource: any, ctx: Context, side: 'sam' | 'cdk'): any {
  const properties = canon(resource.Properties ?? {}, ctx);
  const shaped = DIFFERENCES[name] ? DIFFERENCES[name](properties, side) : properties;
  return text({
    Type: resource.Type,
    Properties: shaped,
    DeletionPolicy: resource.DeletionPolicy,
    UpdateReplacePolicy: resource.UpdateReplacePolicy,
  });
}

const sam = samTemplate();

describe.each(SCENARIOS)('CDK and SAM declare the same stack: $name', (scenario) => {
  const samCtx = samContext(sam, scenario.sam);
  const samResources = resources(sam, samCtx);
  const { template, ctx } = cdkSide(scenario);
  const cdkResources = resources(template, ctx);

  test('the same resources by name and type', () => {
    const list = (r: Record<string, any>) => Object.entries(r).map(([n, v]) => `${n} ${v.Type}`).sort();
    expect(list(cdkResources)).toEqual(list(samResources));
  });

  test.each(Object.keys(samResources).sort())('%s has the same properties', (name) => {
    expect(cdkResources[name]).toBeDefined();
    expect(compared(name, cdkResources[name], ctx, 'cdk')).toEqual(compared(name, samResources[name], samCtx, 'sam'));
  });

  test('the rules\' dead letters may reach the failure queue, and only from the stack\'s rules', () => {
    const grants = (r: Record<string, any>, c: Context) =>
      normaliseStatements(canon(r.FailureQueuePolicy.Properties.PolicyDocument, c).Statement.filter(isDeadLetterGrant));
    const samGrants = grants(samResources, samCtx);
    expect(samGrants).toHaveLength(1);
    expect(samGrants[0].Condition.ArnLike['aws:SourceArn']).toBe('arn:<AWS::Partition>:events:<AWS::Region>:<AWS::AccountId>:rule/*');
    const cdkGrants = grants(cdkResources, ctx);
    const sources = cdkGrants.map((s: any) => s.Condition.ArnEquals['aws:SourceArn']).sort();
    expect(sources).toEqual(['<FunctionAddresses.Arn>', '<FunctionAttach.Arn>', '<FunctionCommandStatus.Arn>', '<FunctionDetach.Arn>', '<FunctionRunning.Arn>']);
    for (const grant of [...samGrants, ...cdkGrants]) {
      expect(grant.Effect).toBe('Allow');
      expect(grant.Action).toEqual(['sqs:SendMessage']);
      expect(grant.Resource).toEqual(['<FailureQueue.Arn>']);
    }
  });
});
