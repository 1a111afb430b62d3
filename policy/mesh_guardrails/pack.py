"""The guardrails as a Pulumi CrossGuard policy pack."""
from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from .props import stack_of
from .rules import RULES, STACK_RULES, Rule, StackRule

PACK_NAME = "mesh-guardrails"


def to_policy(rule: Rule) -> ResourceValidationPolicy:
    """Wrap a plain rule so the engine runs it on every resource, blocking on a violation."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule.check(args.resource_type, args.props, stack_of(args.urn)):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def to_stack_policy(rule: StackRule) -> StackValidationPolicy:
    """Wrap a stack rule: the engine hands over every resource of the stack once."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = list(args.resources)
        stack = stack_of(resources[0].urn) if resources else ""
        for message in rule.check([(r.resource_type, r.props) for r in resources], stack):
            report_violation(message, None)

    return StackValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    return [*(to_policy(rule) for rule in RULES), *(to_stack_policy(rule) for rule in STACK_RULES)]


def serve() -> None:
    """Serve the pack to the Pulumi CLI over gRPC; blocks until the CLI stops it."""
    PolicyPack(name=PACK_NAME, policies=policies(), enforcement_level=EnforcementLevel.MANDATORY)
