// Two templates that declare the same thing in different intrinsic spellings (SAM's Fn::Sub with
// Fn::If against CDK's Fn::Join with synth-time values) are made comparable here: every value is
// rendered to plain text for one set of parameter values, every resource named by its role.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export const ROOT = path.resolve(__dirname, '..', '..', '..');

export type Template = { Resources: Record<string, any>; Conditions?: Record<string, any>; Parameters?: Record<string, any> };

/** infra/template.yaml after AWS's SAM transform (infra/stackset.py), as `sam deploy` creates it. */
export function samTemplate(): Template {
  const python = path.join(ROOT, '.venv', 'bin', 'python');
  if (!fs.existsSync(python)) {
    throw new Error(`${python} is missing: run \`make setup-python\` (the SAM transform is AWS's Python translator)`);
  }
  const program = [
    'import json, sys',
    "sys.path.insert(0, 'infra')",
    'from stackset import transform',
    "print(json.dumps(transform({'ZipFile': 'stand-in'})))",
  ].join('\n');
  return JSON.parse(execFileSync(python, ['-c', program], { cwd: ROOT, encoding: 'utf8' }));
}

export interface Context {
  /** Parameter values (SAM) — defaults are filled in from the template. */
  readonly params: Record<string, string>;
  /** Logical id → the name both templates agree on (the SAM logical id). */
  readonly names: Record<string, string>;
  /** Logical id → resource type, for S3 bucket ARNs. */
  readonly types: Record<string, string>;
  readonly conditions: Record<string, boolean>;
}

const NO_VALUE = Symbol('AWS::NoValue');

export function samContext(template: Template, given: Record<string, string>): Context {
  const params: Record<string, string> = {};
  for (const [name, spec] of Object.entries(template.Parameters ?? {})) {
    if (name in given) params[name] = given[name];
    else if ('Default' in spec) params[name] = String(spec.Default);
  }
  const conditions: Record<string, boolean> = {};
  const evaluate = (node: any): any => {
    if (typeof node !== 'object' || node === null) return node;
    if ('Ref' in node) {
      if (!(node.Ref in params)) throw new Error(`condition refers to ${node.Ref}, which has no value`);
      return params[node.Ref];
    }
    if ('Fn::Equals' in node) return evaluate(node['Fn::Equals'][0]) === evaluate(node['Fn::Equals'][1]);
    if ('Fn::Not' in node) return !evaluate(node['Fn::Not'][0]);
    if ('Fn::And' in node) return node['Fn::And'].every(evaluate);
    if ('Fn::Or' in node) return node['Fn::Or'].some(evaluate);
    if ('Condition' in node) return condition(node.Condition);
    throw new Error(`unsupported condition ${JSON.stringify(node)}`);
  };
  const condition = (name: string): boolean => {
    if (!(name in conditions)) conditions[name] = evaluate(template.Conditions![name]);
    return conditions[name];
  };
  for (const name of Object.keys(template.Conditions ?? {})) condition(name);
  const names: Record<string, string> = {};
  const types: Record<string, string> = {};
  for (const [id, resource] of Object.entries(template.Resources)) {
    names[id] = id;
    types[id] = resource.Type;
  }
  return { params, names, types, conditions };
}

/** The resources that exist for these parameter values, keyed by their agreed name. */
export function resources(template: Template, ctx: Context): Record<string, any> {
  const out: Record<string, any> = {};
  for (const [id, resource] of Object.entries(template.Resources)) {
    if (resource.Condition && !ctx.conditions[resource.Condition]) continue;
    if (resource.Type === 'AWS::CDK::Metadata') continue;
    out[ctx.names[id] ?? id] = resource;
  }
  return out;
}

function ref(name: string, ctx: Context): string {
  if (name in ctx.params) return ctx.params[name];
  if (name.startsWith('AWS::')) return `<${name}>`;
  if (!(name in ctx.names)) throw new Error(`Ref to unknown ${name}`);
  return `<${ctx.names[name]}>`;
}

function getAtt(id: string, attribute: string, ctx: Context): string {
  if (!(id in ctx.names)) throw new Error(`GetAtt of unknown ${id}`);
  // S3's documented ARN form, so `${Bucket.Arn}/x` and `arn:...:s3:::${Bucket}/x` agree.
  if (ctx.types[id] === 'AWS::S3::Bucket' && attribute === 'Arn') return `arn:<AWS::Partition>:s3:::<${ctx.names[id]}>`;
  return `<${ctx.names[id]}.${attribute}>`;
}

/** Render a template value to plain data: intrinsics resolved or named, IAM policies normalised. */
export function canon(node: any, ctx: Context): any {
  const value = render(node, ctx);
  return value === NO_VALUE ? undefined : value;
}

function render(node: any, ctx: Context): any {
  if (Array.isArray(node)) return node.map((v) => render(v, ctx)).filter((v) => v !== NO_VALUE);
  if (node === null || typeof node !== 'object') return node;
  const keys = Object.keys(node);
  if (keys.length === 1) {
    const [key] = keys;
    const arg = node[key];
    switch (key) {
      case 'Ref':
        return arg === 'AWS::NoValue' ? NO_VALUE : ref(arg, ctx);
      case 'Fn::GetAtt': {
        const [id, attribute] = Array.isArray(arg) ? arg : String(arg).split('.');
        return getAtt(id, attribute, ctx);
      }
      case 'Fn::Join':
        return render(arg[1], ctx).map(String).join(arg[0]);
      case 'Fn::If':
        if (!(arg[0] in ctx.conditions)) throw new Error(`Fn::If on unknown condition ${arg[0]}`);
        return render(ctx.conditions[arg[0]] ? arg[1] : arg[2], ctx);
      case 'Fn::Sub': {
        const [text, variables] = Array.isArray(arg) ? arg : [arg, {}];
        return String(text).replace(/\$\{(!?)([^}]+)\}/g, (_m: string, bang: string, name: string) => {
          if (bang) return '${' + name + '}';
          if (name in variables) return String(render(variables[name], ctx));
          const dot = name.indexOf('.');
          return dot > 0 && !name.startsWith('AWS::') ? getAtt(name.slice(0, dot), name.slice(dot + 1), ctx) : ref(name, ctx);
        });
      }
      default:
        if (key.startsWith('Fn::')) throw new Error(`unsupported intrinsic ${key}`);
    }
  }
  const out: Record<string, any> = {};
  for (const [key, value] of Object.entries(node)) {
    const rendered = render(value, ctx);
    if (rendered !== NO_VALUE) out[key] = rendered;
  }
  if (Array.isArray(out.Statement)) out.Statement = normaliseStatements(out.Statement);
  return out;
}

const asList = (v: any): any[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/**
 * IAM statements as a sorted list, each without its Sid, with Action/Resource as sorted lists and
 * the principal `"*"` spelled `{"AWS": "*"}` (the same principal in IAM's grammar).
 */
export function normaliseStatements(statements: any[]): any[] {
  return statements
    .map((s) => {
      const { Sid: _sid, ...rest } = s;
      const out: Record<string, any> = { ...rest };
      if ('Action' in out) out.Action = asList(out.Action).sort();
      if ('Resource' in out) out.Resource = asList(out.Resource).sort();
      if (out.Principal === '*') out.Principal = { AWS: '*' };
      if (out.Principal && typeof out.Principal === 'object') {
        out.Principal = Object.fromEntries(Object.entries(out.Principal).map(([k, v]) => [k, asList(v).sort()]));
      }
      return out;
    })
    .sort((a, b) => stableKey(a).localeCompare(stableKey(b)));
}

/** A sort key that ignores key order and the difference between 1.2 and "1.2". */
function stableKey(node: any): string {
  if (Array.isArray(node)) return `[${node.map(stableKey).join(',')}]`;
  if (node !== null && typeof node === 'object') {
    return `{${Object.keys(node).sort().map((k) => `${k}:${stableKey(node[k])}`).join(',')}}`;
  }
  return JSON.stringify(String(node));
}
