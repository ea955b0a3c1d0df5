data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

# ECS pulls the image and ships the logs with this role (not the job itself).
resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-exec-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # the action has no resource-level permissions
  }
  statement {
    sid       = "PullJobImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
    resources = [aws_ecr_repository.jobs.arn]
  }
  statement {
    sid       = "ShipLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = local.job_log_stream_arns
  }
  statement {
    sid       = "DecryptImageLayers"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.lake.arn]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-and-log"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# One role per job: the lake prefixes it reads and writes, Kafka and Kinesis for raw-append,
# the Glue catalog for maintenance.
resource "aws_iam_role" "job" {
  for_each           = local.jobs
  name_prefix        = "${var.name}-${substr(each.key, 0, 12)}-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = merge(local.tags, { "job" = each.key })
}

data "aws_iam_policy_document" "job" {
  for_each = local.jobs

  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [module.lake_bucket.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values = flatten([
        for p in concat(each.value.reads, each.value.writes) : ["${local.lake_key_prefix}${p}", "${local.lake_key_prefix}${p}/*"]
      ])
    }
  }

  dynamic "statement" {
    for_each = length(each.value.reads) > 0 ? [1] : []
    content {
      sid       = "ReadSources"
      actions   = ["s3:GetObject"]
      resources = [for p in each.value.reads : "${module.lake_bucket.arn}/${local.lake_key_prefix}${p}/*"]
    }
  }

  statement {
    sid = "WriteOwnTables"
    # Delete: log cleanup after checkpoints, vacuum, stale manifests, superseded state files.
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [for p in each.value.writes : "${module.lake_bucket.arn}/${local.lake_key_prefix}${p}/*"]
  }

  statement {
    sid       = "LakeKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.lake.arn]
  }

  dynamic "statement" {
    for_each = each.value.kafka ? [1] : []
    content {
      sid       = "KafkaConnect"
      actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
      resources = [local.msk_arn]
    }
  }

  dynamic "statement" {
    for_each = each.value.kafka ? [1] : []
    content {
      sid       = "KafkaReadTopics"
      actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
      resources = local.msk_topic_arns
    }
  }

  dynamic "statement" {
    for_each = each.value.kafka ? [1] : []
    content {
      sid       = "KafkaConsumerGroup"
      actions   = ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"]
      resources = [local.msk_group_arn]
    }
  }

  # Kinesis sources: the shard listing and GetRecords, on the configured streams only.
  dynamic "statement" {
    for_each = each.value.kinesis && length(var.kinesis_streams) > 0 ? [1] : []
    content {
      sid       = "KinesisRead"
      actions   = ["kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards", "kinesis:DescribeStreamSummary"]
      resources = local.kinesis_stream_arns
    }
  }

  # `maintenance catalog --apply`: reads the tables and partitions, creates and updates them.
  # The database is Terraform's (glue:CreateDatabase is not granted).
  dynamic "statement" {
    for_each = each.value.glue ? [1] : []
    content {
      sid = "GlueCatalog"
      actions = [
        "glue:GetDatabase", "glue:GetTable", "glue:GetPartitions", "glue:CreateTable", "glue:UpdateTable",
        "glue:BatchCreatePartition", "glue:BatchUpdatePartition", "glue:BatchDeletePartition",
      ]
      resources = [local.glue_catalog_arn, aws_glue_catalog_database.lake.arn, local.glue_table_arn]
    }
  }
}

resource "aws_iam_role_policy" "job" {
  for_each = local.jobs
  name     = "lake-access"
  role     = aws_iam_role.job[each.key].id
  policy   = data.aws_iam_policy_document.job[each.key].json
}
