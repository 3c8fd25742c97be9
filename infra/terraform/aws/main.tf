# Least-privilege AWS permissions for gpucost, and an IRSA role for its Kubernetes pods.
#
# The policy grants exactly the API actions gpucost's collectors and its S3 lake call (the test
# tests/infra/test_infra.py derives them from the source and compares), plus what Athena needs
# on the caller's behalf to run a query (the Glue catalog and the query-results bucket).
# ../../aws/iam-policy.json is the same policy with example names, for the console or the CLI.
#
# Drop the statements of collectors you do not configure: aws-cost-explorer (CostExplorerRead),
# aws-ec2 (Ec2InventoryRead), aws-athena (AthenaQueryCur, AthenaCatalogRead, AthenaResults),
# aws-cur and focus-files on S3 (CurList, CurRead), an s3:// lake (LakeList, LakeReadWrite),
# role_arn in a source (AssumeReadRolesInOtherAccounts).

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "region" {
  type        = string
  description = "Region of the Athena workgroup and Glue catalog."
  default     = "us-east-1"
}

variable "billing_bucket" {
  type        = string
  description = "Bucket AWS delivers CUR / Data Exports (or FOCUS files) to."
}

variable "billing_prefix" {
  type        = string
  description = "Prefix of the exports in that bucket, without a trailing slash."
  default     = "cur"
}

variable "athena_workgroup" {
  type    = string
  default = "primary"
}

variable "athena_results_bucket" {
  type = string
}

variable "athena_results_prefix" {
  type    = string
  default = "gpucost"
}

variable "cur_database" {
  type        = string
  description = "Glue database of the CUR table (the CUR's Athena integration creates it)."
}

variable "lake_bucket" {
  type        = string
  description = "Bucket of gpucost's lake when [store] data_dir is s3://."
}

variable "lake_prefix" {
  type    = string
  default = "lake"
}

variable "read_role_arns" {
  type        = list(string)
  description = "Roles in other accounts that sources assume (role_arn); empty for none."
  default     = []
}

variable "eks_oidc_provider_arn" {
  type        = string
  description = "ARN of the EKS cluster's IAM OIDC provider (IRSA)."
}

variable "eks_oidc_provider_url" {
  type        = string
  description = "Its issuer URL without https://, e.g. oidc.eks.us-east-1.amazonaws.com/id/ABC."
}

variable "namespace" {
  type    = string
  default = "gpucost"
}

variable "service_account" {
  type    = string
  default = "gpucost"
}

data "aws_caller_identity" "current" {}

locals {
  account = data.aws_caller_identity.current.account_id
}

data "aws_iam_policy_document" "gpucost" {
  statement {
    sid       = "CostExplorerRead"
    actions   = ["ce:GetCostAndUsage", "ce:GetCostAndUsageWithResources"]
    resources = ["*"] # Cost Explorer has no resource-level permissions
  }

  statement {
    sid       = "Ec2InventoryRead"
    actions   = ["ec2:DescribeInstanceTypes", "ec2:DescribeInstances", "cloudwatch:GetMetricData"]
    resources = ["*"] # Describe* and GetMetricData have no resource-level permissions
  }

  statement {
    sid = "AthenaQueryCur"
    actions = [
      "athena:GetQueryExecution",
      "athena:GetQueryResults",
      "athena:StartQueryExecution",
      "athena:StopQueryExecution",
    ]
    resources = ["arn:aws:athena:${var.region}:${local.account}:workgroup/${var.athena_workgroup}"]
  }

  statement {
    sid     = "AthenaCatalogRead"
    actions = ["glue:GetDatabase", "glue:GetPartitions", "glue:GetTable"]
    resources = [
      "arn:aws:glue:${var.region}:${local.account}:catalog",
      "arn:aws:glue:${var.region}:${local.account}:database/${var.cur_database}",
      "arn:aws:glue:${var.region}:${local.account}:table/${var.cur_database}/*",
    ]
  }

  statement {
    sid       = "CurList"
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::${var.billing_bucket}"]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.billing_prefix, "${var.billing_prefix}/*"]
    }
  }

  statement {
    sid       = "CurRead"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${var.billing_bucket}/${var.billing_prefix}/*"]
  }

  statement {
    sid = "AthenaResults"
    actions = [
      "s3:AbortMultipartUpload",
      "s3:GetBucketLocation",
      "s3:GetObject",
      "s3:ListBucket",
      "s3:ListMultipartUploadParts",
      "s3:PutObject",
    ]
    resources = [
      "arn:aws:s3:::${var.athena_results_bucket}",
      "arn:aws:s3:::${var.athena_results_bucket}/${var.athena_results_prefix}/*",
    ]
  }

  statement {
    sid       = "LakeList"
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::${var.lake_bucket}"]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.lake_prefix, "${var.lake_prefix}/*"]
    }
  }

  statement {
    sid       = "LakeReadWrite"
    actions   = ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    resources = ["arn:aws:s3:::${var.lake_bucket}/${var.lake_prefix}/*"]
  }

  dynamic "statement" {
    for_each = length(var.read_role_arns) > 0 ? [1] : []
    content {
      sid       = "AssumeReadRolesInOtherAccounts"
      actions   = ["sts:AssumeRole"]
      resources = var.read_role_arns
    }
  }
}

resource "aws_iam_policy" "gpucost" {
  name        = "gpucost"
  description = "gpucost collectors and lake: read billing, inventory and metrics; write the lake."
  policy      = data.aws_iam_policy_document.gpucost.json
}

data "aws_iam_policy_document" "irsa_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_provider_url}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_provider_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "gpucost" {
  name               = "gpucost"
  assume_role_policy = data.aws_iam_policy_document.irsa_trust.json
}

resource "aws_iam_role_policy_attachment" "gpucost" {
  role       = aws_iam_role.gpucost.name
  policy_arn = aws_iam_policy.gpucost.arn
}

output "role_arn" {
  description = "Annotate the gpucost ServiceAccount with eks.amazonaws.com/role-arn = this."
  value       = aws_iam_role.gpucost.arn
}
