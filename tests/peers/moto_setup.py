"""Sets up moto for stepgate's peer tests and prints `export` lines for the test run.

Creates, with auth off: roles (step-runner may start and describe, step-viewer only describe), two Pass state machines (demo, orders), a user `stepgate-proxy`
allowed `states:*` and `sts:AssumeRole`, and a user `denied-user` with no Step Functions rights;
then turns moto's IAM signature and policy checking on.
"""
import argparse
import json
import sys

import boto3
import urllib.request


def post(url, body, content_type="text/plain"):
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--noauth-endpoint", required=True)
    args = p.parse_args()
    ep = args.endpoint
    post(f"{ep}/moto-api/reset", b"")
    post(f"{ep}/moto-api/reset-auth", b"inf")
    kw = dict(endpoint_url=ep, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    iam, sfn = boto3.client("iam", **kw), boto3.client("stepfunctions", **kw)
    role = iam.create_role(RoleName="exec", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    definition = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    demo = sfn.create_state_machine(name="demo", definition=definition, roleArn=role)["stateMachineArn"]
    orders = sfn.create_state_machine(name="orders", definition=definition, roleArn=role)["stateMachineArn"]

    iam.create_user(UserName="stepgate-proxy")
    iam.put_user_policy(UserName="stepgate-proxy", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["states:*", "sts:AssumeRole"], "Resource": "*"}]}))
    proxy = iam.create_access_key(UserName="stepgate-proxy")["AccessKey"]
    iam.create_user(UserName="denied-user")
    iam.put_user_policy(UserName="denied-user", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "*"}]}))
    denied = iam.create_access_key(UserName="denied-user")["AccessKey"]

    # A least-privilege role for one step, assumable only by the proxy's user.
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::123456789012:user/stepgate-proxy"}, "Action": "sts:AssumeRole"}]}
    runner = iam.create_role(RoleName="step-runner", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName="step-runner", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["states:StartExecution", "states:DescribeExecution"], "Resource": "*"}]}))
    # A role the proxy may assume that may only describe executions.
    viewer = iam.create_role(RoleName="step-viewer", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName="step-viewer", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["states:DescribeExecution"], "Resource": "*"}]}))
    # A role whose trust policy does not name the proxy.
    nobody = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
              "Principal": {"AWS": "arn:aws:iam::123456789012:user/someone-else"}, "Action": "sts:AssumeRole"}]}
    untrusted = iam.create_role(RoleName="untrusted", AssumeRolePolicyDocument=json.dumps(nobody))["Role"]["Arn"]

    post(f"{ep}/moto-api/reset-auth", b"0")  # enforce signatures and IAM from here on

    # The auth-off moto: a web-identity role and a state machine it may start.
    nkw = dict(kw, endpoint_url=args.noauth_endpoint)
    post(f"{args.noauth_endpoint}/moto-api/reset", b"")
    niam, nsfn = boto3.client("iam", **nkw), boto3.client("stepfunctions", **nkw)
    oidc_trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                  "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"},
                  "Action": "sts:AssumeRoleWithWebIdentity"}]}
    wi_role = niam.create_role(RoleName="gha-deployer", AssumeRolePolicyDocument=json.dumps(oidc_trust))["Role"]["Arn"]
    wi_machine = nsfn.create_state_machine(name="wi-demo", definition=definition, roleArn=wi_role)["stateMachineArn"]
    out = {
        "STEPGATE_TEST_MOTO_AK": proxy["AccessKeyId"],
        "STEPGATE_TEST_MOTO_SK": proxy["SecretAccessKey"],
        "STEPGATE_TEST_MOTO_DENIED_AK": denied["AccessKeyId"],
        "STEPGATE_TEST_MOTO_DENIED_SK": denied["SecretAccessKey"],
        "STEPGATE_TEST_MOTO_SM_ARN": demo,
        "STEPGATE_TEST_MOTO_SM_ARN_ORDERS": orders,
        "STEPGATE_TEST_MOTO_ROLE_ARN": runner,
        "STEPGATE_TEST_MOTO_UNTRUSTED_ROLE_ARN": untrusted,
        "STEPGATE_TEST_MOTO_VIEWER_ROLE_ARN": viewer,
        "STEPGATE_TEST_MOTO_WI_ROLE_ARN": wi_role,
        "STEPGATE_TEST_MOTO_WI_SM_ARN": wi_machine,
    }
    for k, v in out.items():
        print(f"export {k}='{v}'")


if __name__ == "__main__":
    sys.exit(main())
