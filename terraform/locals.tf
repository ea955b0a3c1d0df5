data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition

  lake_root       = "s3://${module.lake_bucket.id}/${var.lake_prefix}"
  lake_key_prefix = "${var.lake_prefix}/"
  image           = "${aws_ecr_repository.jobs.repository_url}:${var.image_tag}"

  create_msk    = var.msk_cluster_arn == null
  msk_arn       = local.create_msk ? aws_msk_cluster.this[0].arn : var.msk_cluster_arn
  kafka_brokers = local.create_msk ? aws_msk_cluster.this[0].bootstrap_brokers_sasl_iam : data.aws_msk_bootstrap_brokers.existing[0].bootstrap_brokers_sasl_iam
  # MSK IAM resource ARNs share the cluster's name/uuid: arn:...:topic/<name>/<uuid>/<topic>.
  msk_topic_arns = [for t in var.kafka_topics : "${replace(local.msk_arn, ":cluster/", ":topic/")}/${t}"]
  msk_group_arn  = "${replace(local.msk_arn, ":cluster/", ":group/")}/${var.kafka_consumer_group}"

  glue_catalog_arn = "arn:${local.partition}:glue:${local.region}:${local.account_id}:catalog"
  glue_table_arn   = "arn:${local.partition}:glue:${local.region}:${local.account_id}:table/${aws_glue_catalog_database.lake.name}/*"

  # Table name -> folder under the lake root, as in schemas/pipeline.toml (checked by tests/deploy).
  table_paths = {
    raw_order             = "raw/order"
    raw_member            = "raw/member"
    raw_dead_letter       = "raw/dead_letter"
    curated               = "curated"
    processed             = "processed"
    processed_dead_letter = "processed_dead_letter"
    processed_tombstones  = "processed_tombstones"
  }

  # Every job, the lake prefixes (table folders and checkpoints, as in schemas/pipeline.toml)
  # it reads and writes, whether it reads Kafka and Kinesis, whether it keeps the Glue catalog
  # (`maintenance catalog --apply`), and the command of its scheduled run.
  # tests/deploy checks these against the pipeline configuration and the DAG.
  jobs = {
    "raw-append" = {
      reads   = []
      writes  = ["raw/order", "raw/member", "raw/dead_letter"]
      kafka   = true
      kinesis = true
      glue    = false
      command = ["raw-append", "--trigger", "once"]
    }
    "stream-join" = {
      reads   = ["raw/order", "raw/member"]
      writes  = ["curated", "_checkpoints/stream-join"]
      kafka   = false
      kinesis = false
      glue    = false
      command = ["stream-join", "--trigger", "once"]
    }
    "merge-upsert" = {
      reads   = ["curated"]
      writes  = ["processed", "processed_dead_letter", "processed_tombstones", "_checkpoints/merge-upsert"]
      kafka   = false
      kinesis = false
      glue    = false
      command = ["merge-upsert", "--trigger", "once"]
    }
    "maintenance" = {
      reads   = []
      writes  = distinct([for t in concat(var.maintained_tables, var.athena_tables) : local.table_paths[t]])
      kafka   = false
      kinesis = false
      glue    = true
      command = ["maintenance", "--help"]
    }
  }

  # Environment every job container gets; the image carries the configuration file.
  job_environment = concat(
    [
      { name = "LAKEHOUSE_LAKE_ROOT", value = local.lake_root },
      { name = "LAKEHOUSE_KAFKA_BROKERS", value = local.kafka_brokers },
      { name = "LAKEHOUSE_KAFKA_SECURITY_PROTOCOL", value = "sasl_ssl" },
      { name = "LAKEHOUSE_KAFKA_SASL_MECHANISM", value = "AWS_MSK_IAM" },
      { name = "LAKEHOUSE_KAFKA_AWS_REGION", value = local.region },
      { name = "AWS_REGION", value = local.region },
    ],
    var.emf_metrics ? [{ name = "LAKEHOUSE_EMF", value = "true" }] : [],
  )

  log_group_names = { for job in keys(local.jobs) : job => "/ecs/${var.name}/${job}" }

  tags = merge({ "app" = var.name, "managed-by" = "terraform" }, var.tags)
}
