# The lake bucket: Delta tables, their logs and checkpoints, symlink manifests. Versioning guards
# the _delta_log against accidental deletes; noncurrent versions expire below.
module "lake_bucket" {
  source      = "./modules/private-bucket"
  bucket      = var.lake_bucket_name
  kms_key_arn = aws_kms_key.lake.arn
  tags        = local.tags
}

# Live Delta files never expire: only the table's own vacuum removes data files (it knows which
# ones no reader needs). Lifecycle only cleans what no table references.
resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  bucket = module.lake_bucket.id

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

  depends_on = [module.lake_bucket]
}

# MWAA's bucket (MWAA requires versioning): the DAG, its settings file, and Athena query results
# under athena-results/.
module "airflow_bucket" {
  source        = "./modules/private-bucket"
  bucket_prefix = "${var.name}-airflow-"
  kms_key_arn   = aws_kms_key.lake.arn
  tags          = local.tags
}

resource "aws_s3_bucket_lifecycle_configuration" "airflow" {
  bucket = module.airflow_bucket.id

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

  depends_on = [module.airflow_bucket]
}

# The DAG and the settings it reads (cluster, task definitions, subnets, Athena names).
resource "aws_s3_object" "dag" {
  bucket      = module.airflow_bucket.id
  key         = "dags/lakehouse_pipeline.py"
  source      = "${path.module}/../airflow/dags/lakehouse_pipeline.py"
  source_hash = filemd5("${path.module}/../airflow/dags/lakehouse_pipeline.py")
  tags        = local.tags
}

resource "aws_s3_object" "dag_settings" {
  bucket  = module.airflow_bucket.id
  key     = "dags/lakehouse_pipeline.json"
  content = jsonencode(local.dag_settings)
  tags    = local.tags
}
