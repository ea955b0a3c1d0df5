# An MSK cluster with IAM authentication, unless an existing cluster's ARN is given.
resource "aws_security_group" "msk" {
  count       = local.create_msk ? 1 : 0
  name_prefix = "${var.name}-msk-"
  description = "MSK brokers: IAM-authenticated TLS from the job tasks"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "msk_from_jobs" {
  count                        = local.create_msk ? 1 : 0
  security_group_id            = aws_security_group.msk[0].id
  description                  = "Kafka over TLS with IAM auth from the job tasks"
  referenced_security_group_id = aws_security_group.jobs.id
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
}

resource "aws_cloudwatch_log_group" "msk" {
  count             = local.create_msk ? 1 : 0
  name              = "/msk/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.lake.arn
  tags              = local.tags
}

resource "aws_msk_cluster" "this" {
  count                  = local.create_msk ? 1 : 0
  cluster_name           = var.name
  kafka_version          = var.msk_kafka_version
  number_of_broker_nodes = length(var.private_subnet_ids)

  broker_node_group_info {
    instance_type   = var.msk_broker_instance_type
    client_subnets  = var.private_subnet_ids
    security_groups = [aws_security_group.msk[0].id]
    storage_info {
      ebs_storage_info {
        volume_size = var.msk_broker_volume_gib
      }
    }
  }

  client_authentication {
    unauthenticated = false
    sasl {
      iam = true
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = aws_kms_key.lake.arn
    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  enhanced_monitoring = "PER_TOPIC_PER_PARTITION"

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.msk[0].name
      }
    }
  }

  tags = local.tags
}

data "aws_msk_bootstrap_brokers" "existing" {
  count       = local.create_msk ? 0 : 1
  cluster_arn = var.msk_cluster_arn
}
