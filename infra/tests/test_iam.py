"""IAM in infra/template.yaml is least privilege: no Allow statement grants a wildcard
action or the resource "*", except the statements listed in ALLOWED_WILDCARDS, where AWS
requires it (each with the reason). Run by scripts/test.sh with the infra tools' Python
(cfn-lint's decoder reads the template's short-form intrinsic functions)."""

import pathlib
import unittest

from cfnlint.decode import decode

TEMPLATE = pathlib.Path(__file__).resolve().parents[1] / "template.yaml"

# (logical id, statement Sid) -> why a wildcard is needed there.
ALLOWED_WILDCARDS = {
    ("PlatformKey", "AccountAdministers"): "AWS's default key policy (kms:* for the account "
    "root); in a key policy the resource `*` is the key itself",
    ("PlatformKey", "ServicesUseTheKey"): "in a key policy the resource `*` is the key itself",
    ("IngestBatchRole", "Tracing"): "X-Ray's PutTraceSegments/PutTelemetryRecords have no "
    "resource-level permissions",
    ("IngestStreamRole", "Tracing"): "X-Ray's PutTraceSegments/PutTelemetryRecords have no "
    "resource-level permissions",
    ("IngestStreamRole", "ListStreams"): "kinesis:ListStreams has no resource-level permissions",
    ("TaskExecutionRole", "EcrLogin"): "ecr:GetAuthorizationToken has no resource-level "
    "permissions",
}


def as_list(value):
    return value if isinstance(value, list) else [value]


def policy_documents(template):
    """(logical id, policy document) of every IAM role, policy, and key policy."""
    for logical_id, resource in template["Resources"].items():
        kind = resource.get("Type")
        properties = resource.get("Properties", {})
        if kind == "AWS::IAM::Role":
            for policy in properties.get("Policies", []):
                yield logical_id, policy["PolicyDocument"]
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            yield logical_id, properties["PolicyDocument"]
        elif kind == "AWS::KMS::Key":
            yield logical_id, properties["KeyPolicy"]


def statements(document):
    for statement in as_list(document["Statement"]):
        # `!If [condition, statement, AWS::NoValue]`: check the statement it may become.
        if isinstance(statement, dict) and "Fn::If" in statement:
            for branch in statement["Fn::If"][1:]:
                if isinstance(branch, dict) and "Effect" in branch:
                    yield branch
        else:
            yield statement


class LeastPrivilege(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        template, matches = decode(str(TEMPLATE))
        assert not matches, matches
        cls.template = template

    def test_no_wildcards_outside_the_documented_exceptions(self):
        checked = 0
        used_exceptions = set()
        for logical_id, document in policy_documents(self.template):
            for statement in statements(document):
                if statement.get("Effect") != "Allow":
                    continue
                checked += 1
                key = (logical_id, statement.get("Sid"))
                actions = [a for a in as_list(statement.get("Action", [])) if isinstance(a, str)]
                resources = as_list(statement.get("Resource", []))
                wildcard_action = any("*" in action for action in actions)
                wildcard_resource = any(resource == "*" for resource in resources)
                self.assertFalse(
                    "NotAction" in statement or "NotResource" in statement,
                    f"{key}: NotAction/NotResource grant everything else",
                )
                if wildcard_action or wildcard_resource:
                    self.assertIn(
                        key,
                        ALLOWED_WILDCARDS,
                        f"{key} grants {actions} on {resources}: name the resources and actions",
                    )
                    used_exceptions.add(key)
        self.assertGreater(checked, 30, "the scan found the policies")
        self.assertEqual(
            used_exceptions,
            set(ALLOWED_WILDCARDS),
            "every documented exception is still needed",
        )

    def test_every_role_is_assumable_by_one_service_only(self):
        for logical_id, resource in self.template["Resources"].items():
            if resource.get("Type") != "AWS::IAM::Role":
                continue
            trust = resource["Properties"]["AssumeRolePolicyDocument"]
            for statement in as_list(trust["Statement"]):
                principal = statement["Principal"]
                self.assertEqual(list(principal), ["Service"], logical_id)
                self.assertIsInstance(principal["Service"], str, logical_id)


if __name__ == "__main__":
    unittest.main()
