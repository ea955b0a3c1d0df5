# A private bucket: owner-enforced, public access blocked, versioned, SSE-KMS with a bucket key,
# TLS only. Lifecycle rules differ per bucket and stay with the caller.
resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:Server access logs would need yet another bucket; CloudTrail data events are the audit trail.
  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery decision left to the account owner (it doubles storage).
  #checkov:skip=CKV2_AWS_62:No consumer of S3 event notifications: readers follow the Delta log, MWAA polls its bucket.
  #checkov:skip=CKV2_AWS_61:Lifecycle rules are set by the caller (aws_s3_bucket_lifecycle_configuration beside the module).
  bucket        = var.bucket
  bucket_prefix = var.bucket_prefix
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket     = aws_s3_bucket.this.id
  policy     = data.aws_iam_policy_document.tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.this]
}
