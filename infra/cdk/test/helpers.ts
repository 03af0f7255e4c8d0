import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App, DefaultStackSynthesizer, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';

export const X86 = 'a'.repeat(64);
export const ARM = 'b'.repeat(64);

/** A stack as the example app makes it, and a stand-in for the Lambda's code. */
export function newStack(app = new App()): { app: App; stack: Stack; code: lambda.Code } {
  const stack = new Stack(app, 'Test', { synthesizer: new DefaultStackSynthesizer({ generateBootstrapVersionRule: false }) });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'symroute-code-'));
  fs.writeFileSync(path.join(dir, 'bootstrap'), '#!/bin/sh\nexit 1\n');
  return { app, stack, code: lambda.Code.fromAsset(dir) };
}
