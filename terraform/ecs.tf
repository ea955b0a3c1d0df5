resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "jobs" {
  for_each          = local.jobs
  name              = local.log_group_names[each.key]
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.lake.arn
  tags              = local.tags
}

locals {
  # The jobs' log streams (ECS writes them, the DAG reads them).
  job_log_stream_arns = [for g in aws_cloudwatch_log_group.jobs : "${g.arn}:*"]
}

resource "aws_security_group" "jobs" {
  name_prefix = "${var.name}-jobs-"
  description = "Job tasks: HTTPS to AWS APIs, Kafka to MSK"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "jobs_https" {
  security_group_id = aws_security_group.jobs.id
  description       = "S3, ECR, CloudWatch Logs, STS (through NAT or VPC endpoints)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "jobs_kafka" {
  security_group_id = aws_security_group.jobs.id
  description       = "MSK brokers, TLS with IAM auth"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 9098
  to_port           = 9098
}

resource "aws_vpc_security_group_ingress_rule" "jobs_metrics" {
  for_each          = toset(var.metrics_scrape_cidrs)
  security_group_id = aws_security_group.jobs.id
  description       = "Prometheus scrapes of the continuous raw-append tasks"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 9464
  to_port           = 9464
}

# What every job container shares: the image, a non-root user on a read-only root filesystem with
# a writable /tmp (heartbeat file), SIGTERM with time to commit or abandon the batch in flight
# (shutdown_timeout, 30 s), and awslogs to the job's log group.
locals {
  container_common = {
    for job in keys(local.jobs) : job => {
      name                   = "job"
      image                  = local.image
      essential              = true
      readonlyRootFilesystem = true
      user                   = "10001:10001"
      stopTimeout            = 120
      linuxParameters        = { initProcessEnabled = true }
      mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          "awslogs-group"         = aws_cloudwatch_log_group.jobs[job].name
          "awslogs-region"        = local.region
          "awslogs-stream-prefix" = job
          "mode"                  = "non-blocking"
          "max-buffer-size"       = "4m"
        }
      }
    }
  }
}

# One task definition per job; the DAG overrides `command` per task (subcommand, table, flags).
resource "aws_ecs_task_definition" "jobs" {
  for_each                 = local.jobs
  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_sizes[each.key].cpu
  memory                   = var.task_sizes[each.key].memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.job[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # A writable /tmp (heartbeat file) under a read-only root filesystem.
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_common[each.key], {
    command     = each.value.command
    environment = local.job_environment
  })])

  tags = local.tags
}

# The continuous raw-append services (raw_append_mode = "continuous"): one service of one task per
# index 0..raw_append_desired_count-1, so each task knows its static share of the Kinesis shards
# (LAKEHOUSE_KINESIS_SHARD_INDEX/_COUNT); Kafka partitions are shared by the consumer group.
# A heartbeat health check and a Prometheus endpoint each.
resource "aws_ecs_task_definition" "raw_append_service" {
  count                    = var.raw_append_mode == "continuous" ? var.raw_append_desired_count : 0
  family                   = "${var.name}-raw-append-service-${count.index}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_sizes["raw-append"].cpu
  memory                   = var.task_sizes["raw-append"].memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.job["raw-append"].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_common["raw-append"], {
    command = ["raw-append", "--trigger", "continuous"]
    environment = concat(local.job_environment, [
      { name = "LAKEHOUSE_RAW_APPEND_GROUP_ID", value = var.kafka_consumer_group },
      { name = "LAKEHOUSE_KINESIS_SHARD_INDEX", value = tostring(count.index) },
      { name = "LAKEHOUSE_KINESIS_SHARD_COUNT", value = tostring(var.raw_append_desired_count) },
      { name = "LAKEHOUSE_METRICS_ADDR", value = "0.0.0.0:9464" },
      { name = "LAKEHOUSE_HEALTH_FILE", value = "/tmp/lakehouse/health.json" },
    ])
    portMappings = [{ containerPort = 9464, protocol = "tcp", name = "metrics" }]
    healthCheck = {
      command     = ["CMD", "/usr/local/bin/lakectl", "healthcheck", "--max-age", "5m"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
  })])

  tags = local.tags
}

resource "aws_ecs_service" "raw_append" {
  count                  = var.raw_append_mode == "continuous" ? var.raw_append_desired_count : 0
  name                   = "${var.name}-raw-append-${count.index}"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.raw_append_service[count.index].arn
  desired_count          = 1
  launch_type            = "FARGATE"
  propagate_tags         = "SERVICE"
  enable_execute_command = false
  # Tasks of a deployment overlap: the consumer group hands partitions over after the old task
  # commits its batch (revocation commits first); the old and new task of one index read the
  # same Kinesis shards for a while, and compare-and-set commits land each batch once.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.jobs.id]
    assign_public_ip = false
  }

  tags = local.tags
}
