# One customer-managed key for the lake, the logs, the image repository and Athena results.
data "aws_iam_policy_document" "kms" {
  # In a key policy, "*" as the resource means this key only.
  #checkov:skip=CKV_AWS_111:Key policy: the resource "*" is the key itself.
  #checkov:skip=CKV_AWS_356:Key policy: the resource "*" is the key itself.
  #checkov:skip=CKV_AWS_109:Key policy: the account root administers its own key (AWS's default key policy).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "lake" {
  description             = "${var.name}: lake bucket, logs, images and Athena results"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = local.tags
}

resource "aws_kms_alias" "lake" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.lake.key_id
}
