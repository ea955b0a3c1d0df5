# Settings the DAG reads beside itself (dags/lakehouse_pipeline.json).
locals {
  dag_settings = {
    region            = local.region
    cluster           = aws_ecs_cluster.this.name
    container         = "job"
    subnets           = var.private_subnet_ids
    security_groups   = [aws_security_group.jobs.id]
    raw_append_mode   = var.raw_append_mode
    maintained_tables = var.maintained_tables
    task_definitions  = { for job, td in aws_ecs_task_definition.jobs : job => td.family }
    log_groups        = local.log_group_names
    athena = {
      database  = aws_glue_catalog_database.lake.name
      workgroup = aws_athena_workgroup.lake.name
      tables    = var.athena_tables
    }
  }
}

resource "aws_security_group" "mwaa" {
  name_prefix = "${var.name}-mwaa-"
  description = "MWAA workers and scheduler"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

# MWAA's components talk to each other over the environment's own security group.
resource "aws_vpc_security_group_ingress_rule" "mwaa_self" {
  security_group_id            = aws_security_group.mwaa.id
  description                  = "MWAA components among themselves"
  referenced_security_group_id = aws_security_group.mwaa.id
  ip_protocol                  = "-1"
}

resource "aws_vpc_security_group_egress_rule" "mwaa_https" {
  security_group_id = aws_security_group.mwaa.id
  description       = "AWS APIs (ECS, Athena, Glue, S3, SQS, CloudWatch)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "mwaa_self" {
  security_group_id            = aws_security_group.mwaa.id
  description                  = "MWAA components among themselves (metadata database, workers)"
  referenced_security_group_id = aws_security_group.mwaa.id
  ip_protocol                  = "-1"
}

data "aws_iam_policy_document" "mwaa_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["airflow.amazonaws.com", "airflow-env.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "mwaa" {
  name_prefix        = "${var.name}-mwaa-"
  assume_role_policy = data.aws_iam_policy_document.mwaa_assume.json
  tags               = local.tags
}

locals {
  mwaa_env_arn  = "arn:${local.partition}:airflow:${local.region}:${local.account_id}:environment/${var.name}"
  task_def_arns = [for td in aws_ecs_task_definition.jobs : "arn:${local.partition}:ecs:${local.region}:${local.account_id}:task-definition/${td.family}:*"]
}

data "aws_iam_policy_document" "mwaa" {
  statement {
    sid       = "PublishAirflowMetrics"
    actions   = ["airflow:PublishMetrics"]
    resources = [local.mwaa_env_arn]
  }
  statement {
    sid       = "ReadDagBucket"
    actions   = ["s3:GetObject*", "s3:GetBucket*", "s3:List*"]
    resources = [module.airflow_bucket.arn, "${module.airflow_bucket.arn}/*"]
  }
  statement {
    sid       = "AirflowLogs"
    actions   = ["logs:CreateLogStream", "logs:CreateLogGroup", "logs:PutLogEvents", "logs:GetLogEvents", "logs:GetLogRecord", "logs:GetLogGroupFields", "logs:GetQueryResults", "logs:DescribeLogGroups"]
    resources = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:airflow-${var.name}-*"]
  }
  statement {
    sid       = "CloudWatchMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData has no resource-level permissions
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["AmazonMWAA"]
    }
  }
  statement {
    sid       = "CeleryQueue"
    actions   = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:SendMessage"]
    resources = ["arn:${local.partition}:sqs:${local.region}:*:airflow-celery-*"]
  }
  statement {
    sid       = "EncryptWithLakeKey"
    actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey*", "kms:Encrypt"]
    resources = [aws_kms_key.lake.arn]
  }
  statement {
    sid           = "CeleryQueueKey"
    actions       = ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey*", "kms:Encrypt"]
    not_resources = ["arn:${local.partition}:kms:*:${local.account_id}:key/*"]
    condition {
      test     = "StringLike"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "RunJobTasks"
    actions   = ["ecs:RunTask"]
    resources = local.task_def_arns
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }
  statement {
    sid       = "WatchJobTasks"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${aws_ecs_cluster.this.name}/*"]
  }
  statement {
    sid       = "ReattachToRunningTasks"
    actions   = ["ecs:ListTasks"]
    resources = ["*"] # filtered by the cluster condition
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }
  statement {
    sid       = "DescribeTaskDefinitions"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"] # the action has no resource-level permissions
  }
  statement {
    sid       = "PassJobRoles"
    actions   = ["iam:PassRole"]
    resources = concat([aws_iam_role.execution.arn], [for r in aws_iam_role.job : r.arn])
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
  statement {
    sid       = "ReadJobLogs"
    actions   = ["logs:GetLogEvents", "logs:FilterLogEvents"]
    resources = local.job_log_stream_arns
  }
}

resource "aws_iam_role_policy" "mwaa" {
  name   = "run-pipeline"
  role   = aws_iam_role.mwaa.id
  policy = data.aws_iam_policy_document.mwaa.json
}

resource "aws_mwaa_environment" "this" {
  name                  = var.name
  airflow_version       = var.mwaa_airflow_version
  environment_class     = var.mwaa_environment_class
  execution_role_arn    = aws_iam_role.mwaa.arn
  source_bucket_arn     = module.airflow_bucket.arn
  dag_s3_path           = "dags/"
  webserver_access_mode = var.mwaa_webserver_access_mode
  max_workers           = 2
  min_workers           = 1

  airflow_configuration_options = {
    "core.default_timezone" = "utc"
    # The DAG's tasks are short API calls and waits; one DAG run at a time (max_active_runs=1).
    "core.load_examples" = "false"
  }

  network_configuration {
    security_group_ids = [aws_security_group.mwaa.id]
    subnet_ids         = slice(var.private_subnet_ids, 0, 2)
  }

  logging_configuration {
    dag_processing_logs {
      enabled   = true
      log_level = "WARNING"
    }
    scheduler_logs {
      enabled   = true
      log_level = "WARNING"
    }
    task_logs {
      enabled   = true
      log_level = "INFO"
    }
    webserver_logs {
      enabled   = true
      log_level = "WARNING"
    }
    worker_logs {
      enabled   = true
      log_level = "WARNING"
    }
  }

  tags       = local.tags
  depends_on = [aws_s3_object.dag, aws_s3_object.dag_settings, aws_iam_role_policy.mwaa]
}
