resource "aws_glue_catalog_database" "lake" {
  name        = var.glue_database
  description = "${var.name}: symlink-manifest tables over the Delta lake (maintenance catalog prints their DDL)"
}

resource "aws_athena_workgroup" "lake" {
  name          = var.name
  force_destroy = false

  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    bytes_scanned_cutoff_per_query     = 1099511627776 # 1 TiB

    result_configuration {
      output_location = "s3://${module.airflow_bucket.id}/athena-results/"
      encryption_configuration {
        encryption_option = "SSE_KMS"
        kms_key_arn       = aws_kms_key.lake.arn
      }
    }
  }

  tags = local.tags
}
