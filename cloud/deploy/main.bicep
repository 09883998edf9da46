// Clinic2Cloud cloud worker on Azure Container Apps jobs, started by the delivery itself.
//
//   agent --(blobs, manifest.json last)--> deliveries container
//   Event Grid system topic: BlobCreated, subject ends with manifest.json --> Storage queue
//   Container Apps job (event trigger, KEDA azure-queue scaler): one execution per message
//     clinic2cloud-worker --config /config/worker.toml   (verify, run the step, write results)
//   results container <--(files, manifest.json last)-- worker;  agent polls it
//
// Deploy into the resource group of the storage account the agents deliver to:
//   az deployment group create -g <rg> -f cloud/deploy/main.bicep \
//     -p storageAccountName=<account> workerImage=<registry>/clinic2cloud-worker:<tag>
// See docs/cloud.md for the whole procedure, the roles and what to check afterwards.

@description('The existing storage account the agents deliver to.')
param storageAccountName string

@description('Container the agents deliver to ([target] container).')
param deliveriesContainer string = 'clinic-uploads'

@description('Container the worker writes results to ([worker] results_container, [results] container).')
param resultsContainer string = 'results'

@description('Queue Event Grid (and optionally the agents, [target] queue_name) notify.')
param queueName string = 'manifests'

@description('The worker image: cloud/Dockerfile, or the site\'s step image with the worker installed.')
param workerImage string

@description('The processing step inside the image ([worker] step).')
param step string = 'clinic2cloud-reference-step {input} {output}'

@description('Minutes before a running step is stopped ([worker] step_timeout_minutes).')
param stepTimeoutMinutes int = 30

@description('Attempts before a failure is final ([worker] max_attempts).')
param maxAttempts int = 3

@description('Executions running at once (each processes one delivery).')
param maxExecutions int = 10

@description('Registry server of the image, pulled with the job identity (empty: public image).')
param registryServer string = ''

param cpu string = '2.0'
param memory string = '4Gi'
param location string = resourceGroup().location
param namePrefix string = 'c2c'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deliveries 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deliveriesContainer
}

resource results 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: resultsContainer
  properties: { publicAccess: 'None' }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: queueName
}

// --- the trigger: BlobCreated on manifest.json only --------------------------------------

resource topic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: '${namePrefix}-deliveries'
  location: location
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource manifests 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2024-06-01-preview' = {
  parent: topic
  name: 'clinic2cloud-manifests'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [ 'Microsoft.Storage.BlobCreated' ]
      subjectBeginsWith: '/blobServices/default/containers/${deliveriesContainer}/blobs/'
      subjectEndsWith: '/manifest.json'
    }
    destination: {
      endpointType: 'StorageQueue'
      properties: {
        resourceId: storage.id
        queueName: queueName
        queueMessageTimeToLiveInSeconds: 604800
      }
    }
    retryPolicy: { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 }
  }
  dependsOn: [ queue ]
}

// --- identity and least-privilege roles --------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-worker'
  location: location
}

var roles = {
  blobReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'       // Storage Blob Data Reader
  blobContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'  // Storage Blob Data Contributor
  queueProcessor: '8a0f0c08-91a1-4084-bc3d-661d67233fed'   // Storage Queue Data Message Processor
  queueReader: '19e7f393-937e-4f77-808e-94535e297925'      // Storage Queue Data Reader (KEDA)
}

resource readDeliveries 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: deliveries
  name: guid(deliveries.id, identity.id, roles.blobReader)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobReader)
  }
}

resource writeResults 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: results
  name: guid(results.id, identity.id, roles.blobContributor)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobContributor)
  }
}

resource takeMessages 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: queue
  name: guid(queue.id, identity.id, roles.queueProcessor)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueProcessor)
  }
}

resource countMessages 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: queue
  name: guid(queue.id, identity.id, roles.queueReader)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueReader)
  }
}

// --- the Container Apps environment and the jobs -----------------------------------------

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-logs'
  location: location
  properties: { sku: { name: 'PerGB2018' }, retentionInDays: 30 }
}

resource env 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${namePrefix}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

// The worker's configuration: the agent's [target] keys (Entra ID, no secret) + [worker].
var workerToml = join([
  '[target]'
  'kind = "azure"'
  'account_url = "${storage.properties.primaryEndpoints.blob}"'
  'container = "${deliveriesContainer}"'
  'use_default_credential = true'
  'queue_name = "${queueName}"'
  ''
  '[worker]'
  'results_container = "${resultsContainer}"'
  'step = "${step}"'
  'step_timeout_minutes = ${stepTimeoutMinutes}'
  'max_attempts = ${maxAttempts}'
  'max_messages = 1'
  'work_dir = "/work"'
  ''
], '\n')

var jobTemplate = {
  containers: [
    {
      name: 'worker'
      image: workerImage
      command: [ 'clinic2cloud-worker' ]
      args: [ '--config', '/config/worker.toml' ]
      resources: { cpu: json(cpu), memory: memory }
      env: [
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
      ]
      volumeMounts: [
        { volumeName: 'config', mountPath: '/config' }
        { volumeName: 'work', mountPath: '/work' }
      ]
    }
  ]
  volumes: [
    { name: 'config', storageType: 'Secret', secrets: [ { secretRef: 'worker-toml', path: 'worker.toml' } ] }
    { name: 'work', storageType: 'EmptyDir' }
  ]
}

var registries = empty(registryServer) ? [] : [
  { server: registryServer, identity: identity.id }
]

resource job 'Microsoft.App/jobs@2024-10-02-preview' = {
  name: '${namePrefix}-worker'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    environmentId: env.id
    configuration: {
      triggerType: 'Event'
      // The step's own timeout plus time to download, verify and upload.
      replicaTimeout: (stepTimeoutMinutes + 15) * 60
      // Retries go through the queue (the message comes back), not the platform.
      replicaRetryLimit: 0
      secrets: [ { name: 'worker-toml', value: workerToml } ]
      registries: registries
      eventTriggerConfig: {
        parallelism: 1
        replicaCompletionCount: 1
        scale: {
          minExecutions: 0
          maxExecutions: maxExecutions
          pollingInterval: 15
          rules: [
            {
              name: 'manifests'
              type: 'azure-queue'
              metadata: {
                accountName: storage.name
                queueName: queueName
                queueLength: '1'
              }
              identity: identity.id
            }
          ]
        }
      }
    }
    template: jobTemplate
  }
  dependsOn: [ takeMessages, countMessages, readDeliveries, writeResults ]
}

// A safety net for lost events: every 30 minutes, deliveries with a manifest and no results.
resource scan 'Microsoft.App/jobs@2024-10-02-preview' = {
  name: '${namePrefix}-scan'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    environmentId: env.id
    configuration: {
      triggerType: 'Schedule'
      replicaTimeout: 6 * 3600
      replicaRetryLimit: 0
      secrets: [ { name: 'worker-toml', value: workerToml } ]
      registries: registries
      scheduleTriggerConfig: {
        cronExpression: '*/30 * * * *'
        parallelism: 1
        replicaCompletionCount: 1
      }
    }
    template: {
      containers: [
        union(jobTemplate.containers[0], { args: [ '--config', '/config/worker.toml', '--scan' ] })
      ]
      volumes: jobTemplate.volumes
    }
  }
  dependsOn: [ readDeliveries, writeResults ]
}

output workerIdentityClientId string = identity.properties.clientId
output resultsContainer string = resultsContainer
output queue string = queueName
