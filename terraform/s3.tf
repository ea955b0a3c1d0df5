# The lake bucket: Delta tables, their logs and checkpoints, symlink manifests.
resource "aws_s3_bucket" "lake" {
  #checkov:skip=CKV_AWS_18:Server access logs would need a second bucket; CloudTrail data events are the audit trail of choice for the lake.
  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery decision left to the account owner (it doubles storage).
  #checkov:skip=CKV2_AWS_62:No consumer of S3 event notifications: readers follow the Delta log, not object events.
  bucket = var.lake_bucket_name
  tags   = local.tags
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  bucket = aws_s3_bucket.lake.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "lake" {
  bucket                  = aws_s3_bucket.lake.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Versioning guards the _delta_log against accidental deletes; noncurrent versions expire below.
resource "aws_s3_bucket_versioning" "lake" {
  bucket = aws_s3_bucket.lake.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.lake.arn
    }
    bucket_key_enabled = true
  }
}

# Live Delta files never expire: only the table's own vacuum removes data files (it knows which
# ones no reader needs). Lifecycle only cleans what no table references.
resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.lake]
}

data "aws_iam_policy_document" "lake_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.lake.arn, "${aws_s3_bucket.lake.arn}/*"]
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

resource "aws_s3_bucket_policy" "lake" {
  bucket     = aws_s3_bucket.lake.id
  policy     = data.aws_iam_policy_document.lake_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.lake]
}

# MWAA's bucket: the DAG, its settings file, and Athena query results under athena-results/.
resource "aws_s3_bucket" "airflow" {
  #checkov:skip=CKV_AWS_18:Holds only the DAG and Athena results; CloudTrail covers access.
  #checkov:skip=CKV_AWS_144:The DAG is rebuilt from this repository; no replica needed.
  #checkov:skip=CKV2_AWS_62:MWAA polls the bucket; no event consumer.
  bucket_prefix = "${var.name}-airflow-"
  tags          = local.tags
}

resource "aws_s3_bucket_ownership_controls" "airflow" {
  bucket = aws_s3_bucket.airflow.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "airflow" {
  bucket                  = aws_s3_bucket.airflow.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# MWAA requires versioning on its source bucket.
resource "aws_s3_bucket_versioning" "airflow" {
  bucket = aws_s3_bucket.airflow.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "airflow" {
  bucket = aws_s3_bucket.airflow.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.lake.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "airflow" {
  bucket = aws_s3_bucket.airflow.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-athena-results"
    status = "Enabled"
    filter {
      prefix = "athena-results/"
    }
    expiration {
      days = 30
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "expire-old-dag-versions"
    status = "Enabled"
    filter {
      prefix = "dags/"
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
  }

  depends_on = [aws_s3_bucket_versioning.airflow]
}

data "aws_iam_policy_document" "airflow_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.airflow.arn, "${aws_s3_bucket.airflow.arn}/*"]
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

resource "aws_s3_bucket_policy" "airflow" {
  bucket     = aws_s3_bucket.airflow.id
  policy     = data.aws_iam_policy_document.airflow_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.airflow]
}

# The DAG and the settings it reads (cluster, task definitions, subnets, Athena names).
resource "aws_s3_object" "dag" {
  bucket      = aws_s3_bucket.airflow.id
  key         = "dags/lakehouse_pipeline.py"
  source      = "${path.module}/../airflow/dags/lakehouse_pipeline.py"
  source_hash = filemd5("${path.module}/../airflow/dags/lakehouse_pipeline.py")
  tags        = local.tags
}

resource "aws_s3_object" "dag_settings" {
  bucket  = aws_s3_bucket.airflow.id
  key     = "dags/lakehouse_pipeline.json"
  content = jsonencode(local.dag_settings)
  tags    = local.tags
}
