// symroute as a CDK construct: the same resources and behaviour as infra/template.yaml (the SAM
// template), with the template's parameters as typed props checked at synth time.
//
// The SSM document and the EventBridge patterns are not written here a second time: they are read
// from assets/ (staged from ssm-documents/ and eventbridge/ by `make cdk-build`), so the SAM
// template and this construct cannot drift apart. test/parity.test.ts compares the two stacks.
import * as fs from 'fs';
import * as path from 'path';
import { Aws, Duration, Fn, IResolvable, RemovalPolicy, Stack, Token, Validations } from 'aws-cdk-lib';
import * as cloudtrail from 'aws-cdk-lib/aws-cloudtrail';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwactions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';

/** Where the staged document, patterns and (when built) the Lambda zip live in this package. */
const ASSETS = path.join(__dirname, '..', 'assets');

/** The template's defaults, one definition each. */
export const DEFAULT_OWNER_MARKERS = [
  'tag:node.k8s.amazonaws.com/instance_id',
  'description:aws-K8S-',
  'description:Cilium-CNI (',
];
const DEFAULT_SKIP_TAG = 'symroute:skip';
const DEFAULT_COMMAND_TIMEOUT_SECONDS = 600;

/** What `apply` does with the connmark mode (the SSM document's `connmark` parameter). */
export enum ConnmarkMode {
  /** Each ENI keeps the mode it has. */
  KEEP = 'keep',
  /**
   * Connections that arrive on an ENI are answered through it whatever the reply's source, so
   * DNAT'd services (Docker published ports) answer too. The instance needs nftables' `nft`.
   */
  ON = 'on',
  /** Turn the mode off. */
  OFF = 'off',
}

/** State Manager association: instances with this tag get `apply all` when they register and on a schedule. */
export interface AssociationOptions {
  /** The tag key that selects instances. */
  readonly tagKey: string;
  /** The tag value that selects instances. @default "true" */
  readonly tagValue?: string;
  /** State Manager schedule, `rate(...)` or `cron(...)`. @default "rate(1 day)" */
  readonly schedule?: string;
}

/** Props of {@link Symroute}: the SAM template's parameters, typed. */
export interface SymrouteProps {
  /** SHA-256 of symroute-linux-x86_64 (dist/agent/SHA256SUMS); also names its S3 prefix. */
  readonly agentSha256X8664: string;
  /** SHA-256 of symroute-linux-aarch64 (dist/agent/SHA256SUMS); also names its S3 prefix. */
  readonly agentSha256Aarch64: string;
  /**
   * An existing bucket holding agent/<x86>-<arm>/symroute-linux-* (one central bucket for many
   * accounts). @default a private, versioned bucket created here
   */
  readonly agentBucket?: s3.IBucket;
  /**
   * AWS Organizations id (o-...) whose accounts' instances may read the agent from the bucket
   * created here. @default this account only
   */
  readonly agentReadOrganizationId?: string;
  /**
   * false keeps the rules disabled and the association absent: deploy disabled, upload the agent,
   * then deploy enabled, and nothing sends a command before the agent it names is there.
   * @default true
   */
  readonly enabled?: boolean;
  /**
   * The first successful apply on an instance leaves the on-host trigger behind (udev and systemd
   * units): every later ENI is routed the moment it appears, and a periodic check runs. false:
   * only CloudTrail events and the association act. @default true
   */
  readonly onHostTrigger?: boolean;
  /** The connmark mode every `apply` asks for. @default ConnmarkMode.KEEP */
  readonly connmark?: ConnmarkMode;
  /**
   * SendCommand's TimeoutSeconds: how long SSM keeps trying to deliver to an instance that is not
   * connected (30 s to 3600 s, whole seconds). @default Duration.seconds(600)
   */
  readonly commandTimeout?: Duration;
  /**
   * ENIs another tool owns and routes itself, left alone: `tag:<key>` or `description:<prefix>`.
   * @default Amazon VPC CNI and Cilium's ENI mode (DEFAULT_OWNER_MARKERS)
   */
  readonly ownerMarkers?: string[];
  /** Instances or ENIs carrying this tag key are left alone. @default "symroute:skip" */
  readonly skipTag?: string;
  /** Retention of the Lambda's and the commands' log groups. @default RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /** Notified when an event lands in the failure queue. @default no notification */
  readonly alarmTopic?: sns.ITopic;
  /**
   * Create a trail: CloudTrail events reach EventBridge only with one. Leave false when the
   * account or the organization already has one. @default false
   */
  readonly createTrail?: boolean;
  /** Run `apply all` from State Manager on tagged instances. @default no association */
  readonly association?: AssociationOptions;
  /**
   * The Lambda's code. @default the arm64 zip `make lambda` builds, staged in this package's assets/
   */
  readonly code?: lambda.Code;
}

/** One EventBridge rule of the stack, by the name the SAM template gives its event. */
interface RuleSpec {
  readonly id: string;
  readonly patternFile: string;
}

const RULES: RuleSpec[] = [
  { id: 'Attach', patternFile: 'attach-network-interface.json' },
  { id: 'Detach', patternFile: 'detach-network-interface.json' },
  // Addresses or prefixes assigned to or unassigned from an attached ENI: apply it again.
  { id: 'Addresses', patternFile: 'address-change.json' },
  { id: 'Running', patternFile: 'instance-running.json' },
  // Outcome of the commands it sent: 3 is sent again, 1 and 2 end in the failure queue.
  { id: 'CommandStatus', patternFile: 'command-status.json' },
];

/**
 * symroute, deployed once per account: EventBridge rules on CloudTrail ENI calls (and instance
 * starts, and the outcome of its own commands) invoke a Lambda that sends the symroute SSM
 * document to the instance; the document fetches the agent from the artifact bucket, checks its
 * SHA-256 and runs it.
 */
export class Symroute extends Construct {
  /** The SSM document (run it by hand with `aws ssm send-command`, or from State Manager). */
  public readonly document: ssm.CfnDocument;
  /** The document's name. */
  public readonly documentName: string;
  /** Where the agent lives: agent/<x86 sha>-<arm sha>/symroute-linux-{x86_64,aarch64}. */
  public readonly agentBucket: s3.IBucket;
  /** The Lambda. */
  public readonly function: lambda.Function;
  /** Events symroute could not handle (14 days). */
  public readonly failureQueue: sqs.Queue;
  /** Fires once per message sent to the failure queue. */
  public readonly failureAlarm: cloudwatch.Alarm;
  /** Command output of the document's runs. */
  public readonly commandLogGroup: logs.LogGroup;
  /** Optional for instance roles: write command output to the log group, read the agent. */
  public readonly instancePolicy: iam.ManagedPolicy;
  /** The EventBridge rules (attach, detach, running, command status). */
  public readonly rules: events.Rule[];
  /** The trail, when createTrail is set. */
  public readonly trail?: cloudtrail.CfnTrail;
  /** The association, when one was asked for and the stack is enabled. */
  public readonly association?: ssm.CfnAssociation;

  constructor(scope: Construct, id: string, props: SymrouteProps) {
    super(scope, id);
    const settings = checkProps(props);
    const stack = Stack.of(this);

    this.agentBucket = props.agentBucket ?? this.createArtifactBucket(props.agentReadOrganizationId);

    this.commandLogGroup = new logs.LogGroup(this, 'CommandLogGroup', {
      retention: settings.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.document = new ssm.CfnDocument(this, 'Document', {
      documentType: 'Command',
      documentFormat: 'YAML',
      updateMethod: 'NewVersion',
      content: substitute(readAsset('document.json'), {
        'AWS::Region': Aws.REGION,
        'AWS::URLSuffix': Aws.URL_SUFFIX,
        AgentBucket: this.agentBucket.bucketName,
        AgentSha256X8664: props.agentSha256X8664,
        AgentSha256Aarch64: props.agentSha256Aarch64,
      }),
    });
    this.documentName = this.document.ref;

    this.instancePolicy = new iam.ManagedPolicy(this, 'InstancePolicy', {
      description:
        'Optional, next to AmazonSSMManagedInstanceCore: write symroute\'s command output to ' +
        'CloudWatch Logs, and read the agent from a bucket this stack does not own.',
      statements: [
        ...agentReadStatements(this.agentBucket),
        new iam.PolicyStatement({
          sid: 'WriteCommandOutput',
          actions: ['logs:CreateLogStream', 'logs:PutLogEvents', 'logs:DescribeLogStreams'],
          resources: [this.commandLogGroup.logGroupArn],
        }),
        new iam.PolicyStatement({
          sid: 'FindCommandLogGroup',
          actions: ['logs:DescribeLogGroups'],
          resources: ['*'],
        }),
      ],
    });

    if (props.association && settings.enabled) {
      this.association = new ssm.CfnAssociation(this, 'Association', {
        name: this.document.ref,
        documentVersion: '$DEFAULT',
        parameters: {
          action: ['apply'],
          target: ['all'],
          onHostTrigger: [String(settings.onHostTrigger)],
          connmark: [settings.connmark],
        },
        targets: [{ key: `tag:${props.association.tagKey}`, values: [props.association.tagValue ?? 'true'] }],
        scheduleExpression: props.association.schedule ?? 'rate(1 day)',
        applyOnlyAtCronInterval: false,
        maxConcurrency: '10%',
        maxErrors: '10%',
      });
    }

    this.failureQueue = new sqs.Queue(this, 'FailureQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      retentionPeriod: Duration.days(14),
      enforceSSL: true,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.failureAlarm = new cloudwatch.Alarm(this, 'FailureAlarm', {
      alarmDescription:
        'symroute could not handle an ENI event, or a command it sent failed on the instance ' +
        '(Lambda failed after retries, or EventBridge could not deliver). Each failure is a new ' +
        'message in the failure queue, so the alarm fires per failure, not on the queue\'s depth ' +
        '(which stays up for the 14 days messages are kept).',
      // Per message sent, not the depth: the depth stays up for the 14 days messages are kept.
      metric: this.failureQueue.metricNumberOfMessagesSent({ statistic: 'Sum', period: Duration.minutes(1) }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (props.alarmTopic) {
      this.failureAlarm.addAlarmAction(new cwactions.SnsAction(props.alarmTopic));
    }

    const functionLogGroup = new logs.LogGroup(this, 'FunctionLogGroup', {
      retention: settings.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const role = new iam.Role(this, 'FunctionRole', {
      // No aws:SourceAccount/SourceArn condition: Lambda does not document setting them when it
      // assumes an execution role, and a role cannot be passed across accounts.
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      inlinePolicies: {
        symroute: new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({
              sid: 'Logs',
              actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
              resources: [functionLogGroup.logGroupArn],
            }),
            // Describe calls cannot be scoped to resources.
            new iam.PolicyStatement({
              sid: 'Describe',
              actions: [
                'ec2:DescribeNetworkInterfaces',
                'ec2:DescribeInstances',
                'ssm:DescribeInstanceInformation',
                'ssm:GetCommandInvocation',
                'ssm:ListCommands',
              ],
              resources: ['*'],
            }),
            new iam.PolicyStatement({
              sid: 'TagEnisWithOwnKeysOnly',
              actions: ['ec2:CreateTags', 'ec2:DeleteTags'],
              resources: [anyEniArn(stack)],
              conditions: { 'ForAllValues:StringLike': { 'aws:TagKeys': ['symroute:*'] } },
            }),
            new iam.PolicyStatement({
              sid: 'SendOurDocumentToInstances',
              actions: ['ssm:SendCommand'],
              resources: [
                stack.formatArn({ service: 'ssm', resource: 'document', resourceName: this.document.ref }),
                anyInstanceArn(stack),
              ],
            }),
            new iam.PolicyStatement({
              sid: 'OnFailureDestination',
              actions: ['sqs:SendMessage'],
              resources: [this.failureQueue.queueArn],
            }),
          ],
        }),
      },
    });

    const failureQueueArn = this.failureQueue.queueArn;
    this.function = new lambda.Function(this, 'Function', {
      description: 'symroute - from a CloudTrail ENI event to the symroute SSM command',
      code: props.code ?? defaultCode(),
      handler: 'bootstrap',
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      memorySize: 256,
      // It sends and returns; the outcome comes back as a command status-change event. The bound
      // covers an ENI still `attaching` (20 s) and the SDK's retries.
      timeout: Duration.seconds(60),
      role,
      logGroup: functionLogGroup,
      environment: {
        SYMROUTE_DOCUMENT_NAME: this.document.ref,
        SYMROUTE_SKIP_TAG: settings.skipTag,
        SYMROUTE_OWNER_MARKERS: settings.ownerMarkers.join(','),
        SYMROUTE_COMMAND_TIMEOUT_SECONDS: String(settings.commandTimeoutSeconds),
        SYMROUTE_LOG_GROUP: this.commandLogGroup.logGroupName,
        SYMROUTE_ON_HOST_TRIGGER: String(settings.onHostTrigger),
        SYMROUTE_CONNMARK: settings.connmark,
      },
      retryAttempts: 2,
      maxEventAge: Duration.hours(1),
      // The role above already may send to the queue (OnFailureDestination): a destination that
      // grants nothing keeps the role's policy exactly the template's.
      onFailure: { bind: () => ({ destination: failureQueueArn }) },
    });

    // CDK makes the function depend on its role explicitly; the GetAtt of the role's ARN already
    // orders them, and the role's policy is inline (no separate policy to wait for). cfn-lint
    // reports the redundant DependsOn (W3005), so it goes.
    (this.function.node.defaultChild as lambda.CfnFunction).addDeletionOverride('DependsOn');

    this.rules = RULES.map((spec) => {
      const rule = new events.Rule(this, `${spec.id}Rule`, {
        enabled: settings.enabled,
        eventPattern: toEventPattern(
          substitute(readAsset(path.join('eventbridge', spec.patternFile)), { Document: this.document.ref }),
          spec.patternFile,
        ),
      });
      // Each rule's dead letters are allowed by its own ARN (the template allows rule/*).
      rule.addTarget(new targets.LambdaFunction(this.function, {
        retryAttempts: 185,
        maxEventAge: Duration.hours(24),
        deadLetterQueue: this.failureQueue,
      }));
      return rule;
    });

    if (settings.createTrail) {
      this.trail = this.createTrail();
    }
    this.acknowledgeNagFindings();
  }

  /**
   * Let an instance role read the agent (s3:GetObject on agent/*, s3:ListBucket of agent/*, as
   * aws:downloadContent does). The bucket created here already lets every principal of the account
   * (or organization) read it; this is for a central bucket or for explicit grants.
   */
  public grantAgentRead(grantee: iam.IGrantable): iam.Grant {
    const [get, list] = agentReadStatements(this.agentBucket);
    const grant = iam.Grant.addToPrincipal({ grantee, actions: get.actions, resourceArns: get.resources });
    iam.Grant.addToPrincipal({
      grantee,
      actions: list.actions,
      resourceArns: list.resources,
      conditions: { StringLike: { 's3:prefix': ['agent/*'] } },
    });
    return grant;
  }

  /**
   * cdk-nag's AWS Solutions findings that are the design, each with its reason (checked by the
   * example app and test/nag.test.ts; finding ids are exact, so a new wildcard is a new finding).
   */
  private acknowledgeNagFindings(): void {
    const stack = Stack.of(this);
    const finding = (rule: string, resource: string | IResolvable) =>
      `AwsSolutions-${rule}[Resource::${nagText(stack, stack.resolve(resource))}]`;
    Validations.of(this.instancePolicy).acknowledge(
      {
        id: finding('IAM5', this.agentBucket.arnForObjects('agent/*')),
        reason: 'The agent\'s release prefix: content-addressed folders agent/<x86 sha>-<arm sha>/, read-only.',
      },
      {
        id: finding('IAM5', '*'),
        reason: 'logs:DescribeLogGroups cannot be scoped to a resource; the SSM Agent calls it to find the command log group.',
      },
    );
    const role = this.function.role!;
    Validations.of(role).acknowledge(
      {
        id: finding('IAM5', '*'),
        reason: 'ec2:Describe*, ssm:DescribeInstanceInformation, ssm:GetCommandInvocation and ssm:ListCommands cannot be scoped to resources.',
      },
      {
        id: finding('IAM5', anyEniArn(stack)),
        reason: 'Any ENI may be attached; tagging is limited to symroute:* keys by an aws:TagKeys condition.',
      },
      {
        id: finding('IAM5', anyInstanceArn(stack)),
        reason: 'Any instance may get an ENI; SendCommand is limited to this stack\'s own document.',
      },
    );
    Validations.of(this.failureQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is the dead-letter queue: of the Lambda\'s asynchronous invocations and of every rule\'s target.',
    });
    if (this.agentBucket instanceof s3.Bucket) {
      Validations.of(this.agentBucket).acknowledge({
        id: 'AwsSolutions-S1',
        reason: 'Holds only the agent binaries, readable by the account\'s own principals; CloudTrail data events record reads where an account wants them, without a log bucket per stack.',
      });
    }
  }

  private createArtifactBucket(organizationId?: string): s3.Bucket {
    const bucket = new s3.Bucket(this, 'ArtifactBucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      versioned: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [{
        id: 'expire-replaced-versions',
        noncurrentVersionExpiration: Duration.days(90),
        abortIncompleteMultipartUploadAfter: Duration.days(7),
      }],
    });
    // Instances read the agent with their own role and no extra policy: any principal of this
    // account (or of the organization). A fixed aws:PrincipalAccount or aws:PrincipalOrgID is not
    // "public" for S3's Block Public Access.
    const who = organizationId
      ? { 'aws:PrincipalOrgID': organizationId }
      : { 'aws:PrincipalAccount': Aws.ACCOUNT_ID };
    bucket.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'InstancesReadAgent',
      principals: [new iam.AnyPrincipal()],
      actions: ['s3:GetObject'],
      resources: [bucket.arnForObjects('agent/*')],
      conditions: { StringEquals: who },
    }));
    bucket.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'InstancesListAgent',
      principals: [new iam.AnyPrincipal()],
      actions: ['s3:ListBucket'],
      resources: [bucket.bucketArn],
      conditions: { StringEquals: who, StringLike: { 's3:prefix': ['agent/*'] } },
    }));
    return bucket;
  }

  private createTrail(): cloudtrail.CfnTrail {
    const bucket = new s3.Bucket(this, 'TrailBucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      versioned: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [{
        id: 'expire-trail-logs',
        expiration: Duration.days(90),
        noncurrentVersionExpiration: Duration.days(7),
      }],
    });
    // CloudTrail's own statements, with aws:SourceAccount (the L2 Trail writes them without it:
    // any account's trail could then write here), hence the L1 trail below.
    const cloudTrail = new iam.ServicePrincipal('cloudtrail.amazonaws.com');
    const sameAccount = { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } };
    bucket.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'CloudTrailAclCheck',
      principals: [cloudTrail],
      actions: ['s3:GetBucketAcl'],
      resources: [bucket.bucketArn],
      conditions: sameAccount,
    }));
    bucket.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'CloudTrailWrite',
      principals: [cloudTrail],
      actions: ['s3:PutObject'],
      resources: [bucket.arnForObjects(`AWSLogs/${Aws.ACCOUNT_ID}/*`)],
      conditions: sameAccount,
    }));
    const trail = new cloudtrail.CfnTrail(this, 'Trail', {
      s3BucketName: bucket.bucketName,
      isLogging: true,
      isMultiRegionTrail: false,
      includeGlobalServiceEvents: false,
      enableLogFileValidation: true,
    });
    trail.node.addDependency(bucket.policy!);
    Validations.of(bucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason: 'The trail\'s bucket holds the audit logs themselves; access logs of it would need a third bucket and log the logs.',
    });
    return trail;
  }
}

interface Settings {
  readonly enabled: boolean;
  readonly onHostTrigger: boolean;
  readonly connmark: ConnmarkMode;
  readonly createTrail: boolean;
  readonly skipTag: string;
  readonly ownerMarkers: string[];
  readonly commandTimeoutSeconds: number;
  readonly logRetention: logs.RetentionDays;
}

/** The template's AllowedPattern/AllowedValues/bounds, checked at synth time (one line each). */
function checkProps(props: SymrouteProps): Settings {
  const check = (name: string, value: string | undefined, pattern: RegExp, what: string) => {
    if (value !== undefined && !Token.isUnresolved(value) && !pattern.test(value)) {
      throw new Error(`symroute: ${name} must be ${what}, got ${JSON.stringify(value)}`);
    }
  };
  check('agentSha256X8664', props.agentSha256X8664, /^[0-9a-f]{64}$/, '64 lowercase hex digits (dist/agent/SHA256SUMS)');
  check('agentSha256Aarch64', props.agentSha256Aarch64, /^[0-9a-f]{64}$/, '64 lowercase hex digits (dist/agent/SHA256SUMS)');
  check('agentReadOrganizationId', props.agentReadOrganizationId, /^o-[a-z0-9]{10,32}$/, 'an Organizations id (o- and 10 to 32 lowercase letters or digits)');
  if (props.agentReadOrganizationId !== undefined && props.agentBucket !== undefined) {
    throw new Error('symroute: agentReadOrganizationId applies to the bucket this construct creates; with agentBucket, set that bucket\'s policy instead');
  }
  const tagPattern = /^[A-Za-z0-9 _.:/=+@-]{1,128}$/;
  const skipTag = props.skipTag ?? DEFAULT_SKIP_TAG;
  check('skipTag', skipTag, tagPattern, '1 to 128 letters, digits, spaces or _.:/=+@-');
  const ownerMarkers = props.ownerMarkers ?? DEFAULT_OWNER_MARKERS;
  for (const marker of ownerMarkers) {
    check('ownerMarkers', marker, /^(tag:|description:)[^\n,]+$/, '`tag:<key>` or `description:<prefix>` without commas or newlines');
  }
  const joined = ownerMarkers.join(',');
  if (joined.length > 1024) {
    throw new Error(`symroute: ownerMarkers must fit in 1024 characters joined with commas, got ${joined.length}`);
  }
  const commandTimeout = props.commandTimeout ?? Duration.seconds(DEFAULT_COMMAND_TIMEOUT_SECONDS);
  const commandTimeoutSeconds = commandTimeout.toSeconds();
  if (!Number.isInteger(commandTimeoutSeconds) || commandTimeoutSeconds < 30 || commandTimeoutSeconds > 3600) {
    throw new Error(`symroute: commandTimeout must be whole seconds from 30 to 3600, got ${commandTimeout.toHumanString()}`);
  }
  if (props.association) {
    check('association.tagKey', props.association.tagKey, tagPattern, '1 to 128 letters, digits, spaces or _.:/=+@-');
    check('association.tagValue', props.association.tagValue, /^[A-Za-z0-9 _.:/=+@-]{1,256}$/, '1 to 256 letters, digits, spaces or _.:/=+@-');
    check('association.schedule', props.association.schedule, /^(rate|cron)\([^\n]{1,120}\)$/, 'rate(...) or cron(...)');
  }
  return {
    enabled: props.enabled ?? true,
    onHostTrigger: props.onHostTrigger ?? true,
    connmark: props.connmark ?? ConnmarkMode.KEEP,
    createTrail: props.createTrail ?? false,
    skipTag,
    ownerMarkers,
    commandTimeoutSeconds,
    logRetention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
  };
}

/** Every ENI of the account and region: the Lambda tags ENIs it cannot know in advance. */
function anyEniArn(stack: Stack): string {
  return stack.formatArn({ service: 'ec2', resource: 'network-interface', resourceName: '*' });
}

/** Every instance of the account and region: any of them may get an ENI. */
function anyInstanceArn(stack: Stack): string {
  return stack.formatArn({ service: 'ec2', resource: 'instance', resourceName: '*' });
}

function agentReadStatements(bucket: s3.IBucket): iam.PolicyStatement[] {
  return [
    new iam.PolicyStatement({
      sid: 'ReadAgent',
      actions: ['s3:GetObject'],
      resources: [bucket.arnForObjects('agent/*')],
    }),
    // aws:downloadContent lists the prefix before fetching it.
    new iam.PolicyStatement({
      sid: 'ListAgent',
      actions: ['s3:ListBucket'],
      resources: [bucket.bucketArn],
      conditions: { StringLike: { 's3:prefix': ['agent/*'] } },
    }),
  ];
}

function readAsset(name: string): unknown {
  const file = path.join(ASSETS, name);
  if (!fs.existsSync(file)) {
    throw new Error(`symroute: ${file} is missing; stage the package's assets with \`make cdk-build\``);
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function defaultCode(): lambda.Code {
  const zip = path.join(ASSETS, 'symroute-lambda-arm64.zip');
  if (!fs.existsSync(zip)) {
    throw new Error(`symroute: no Lambda code: build it with \`make lambda cdk-build\` (stages ${zip}) or pass props.code`);
  }
  return lambda.Code.fromAsset(zip);
}

/**
 * A resolved value as cdk-nag names it in a finding id: `<Logical.Attr>` for Fn::GetAtt,
 * `<Logical>` for Ref, the parts of Fn::Join joined.
 */
function nagText(stack: Stack, value: any): string {
  if (typeof value === 'string') return value;
  if (value && value['Fn::GetAtt']) return `<${value['Fn::GetAtt'].join('.')}>`;
  if (value && value.Ref) return `<${value.Ref}>`;
  if (value && value['Fn::Join']) {
    const [separator, parts] = value['Fn::Join'];
    return parts.map((part: any) => nagText(stack, part)).join(separator);
  }
  throw new Error(`symroute: cannot name ${JSON.stringify(value)} as cdk-nag does`);
}

const PLACEHOLDER = /@@([A-Za-z0-9:]+)@@/g;

/**
 * Replace every @@Name@@ in the strings of a staged document or pattern: a string that is a whole
 * placeholder becomes the value itself (a token stays a token), others are joined around it.
 * An unknown name is an error, so a new placeholder in ssm-documents/ cannot slip through.
 */
function substitute(node: unknown, values: Record<string, string>): any {
  if (Array.isArray(node)) return node.map((v) => substitute(v, values));
  if (node !== null && typeof node === 'object') {
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, substitute(v, values)]));
  }
  if (typeof node !== 'string') return node;
  const parts = node.split(PLACEHOLDER);
  if (parts.length === 1) return node;
  const pieces = parts.map((part, i) => {
    if (i % 2 === 0) return part;
    const value = values[part];
    if (value === undefined) throw new Error(`symroute: unknown placeholder @@${part}@@ in a staged asset`);
    return value;
  }).filter((piece) => piece !== '');
  return pieces.length === 1 ? pieces[0] : Fn.join('', pieces);
}

/** The JSON pattern files use EventBridge's own keys; the L2 Rule takes them in camelCase. */
function toEventPattern(pattern: Record<string, unknown>, file: string): events.EventPattern {
  const keys: Record<string, keyof events.EventPattern> = {
    'source': 'source',
    'detail-type': 'detailType',
    'detail': 'detail',
    'account': 'account',
    'region': 'region',
    'resources': 'resources',
  };
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(pattern)) {
    const mapped = keys[key];
    if (mapped === undefined) throw new Error(`symroute: eventbridge/${file}: top-level key "${key}" is not one the Rule construct takes`);
    out[mapped] = value;
  }
  return out as events.EventPattern;
}
