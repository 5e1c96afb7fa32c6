package cairn.testbed;

import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.function.UnaryOperator;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;

import org.opensearch.Version;
import org.opensearch.client.node.NodeClient;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.common.util.concurrent.ThreadContext;
import org.opensearch.core.rest.RestStatus;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.ActionPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.plugins.SecureHttpTransportSettingsProvider;
import org.opensearch.plugins.SecureSettingsFactory;
import org.opensearch.plugins.SecureTransportSettingsProvider;
import org.opensearch.plugins.TransportExceptionHandler;
import org.opensearch.rest.BytesRestResponse;
import org.opensearch.rest.RestChannel;
import org.opensearch.rest.RestHandler;
import org.opensearch.rest.RestRequest;
import org.opensearch.transport.Netty4Plugin;

/**
 * Starts one OpenSearch node in this JVM, for tests: the server jar and the HTTP transport module
 * from Maven Central on the classpath, loaded as classpath plugins (no plugins directory, no
 * bootstrap checks, no security manager), single-node discovery on 127.0.0.1.
 *
 * <pre>
 * java -Xmx512m -cp 'lib/*:classes' cairn.testbed.Launcher --home DIR --http-port N
 *      [--transport-port N] [--repo DIR] [--tls-cert PEM --tls-key PEM] [--basic-auth-file FILE]
 *      [-Ekey=value ...]
 * </pre>
 *
 * With --tls-cert and --tls-key (a PEM certificate chain and its PKCS#8 PEM key) the node serves
 * HTTPS through the HTTP transport module's own TLS support ({@code http.type: netty4-secure}),
 * without the security plugin. With --basic-auth-file (one line {@code user:password}) every REST
 * request must carry that user's HTTP basic credentials, else it gets 401.
 *
 * The home directory gets {@code config/} (with a console log4j2 configuration), {@code data/},
 * {@code logs/} and, unless --repo is given, {@code repo/} (the {@code path.repo} for snapshot
 * repositories). Logs go to stdout. SIGTERM closes the node cleanly; SIGKILL is fine too.
 */
public final class Launcher {
    private static final String LOG4J2 = String.join("\n",
        "status = error",
        "appender.console.type = Console",
        "appender.console.name = console",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n",
        "rootLogger.level = ${sys:cairn.log.level:-info}",
        "rootLogger.appenderRef.console.ref = console",
        "");

    /** The TLS settings of the HTTP server, when enabled (set before the node starts). */
    static volatile SSLContext httpTls;
    /** The expected {@code Authorization} header, when basic auth is enabled. */
    static volatile String basicAuthHeader;

    /** HTTPS and basic auth for the REST layer, from the static settings above. */
    public static final class TestSecurityPlugin extends Plugin implements ActionPlugin {
        public TestSecurityPlugin() {}

        @Override
        public Optional<SecureSettingsFactory> getSecureSettingFactory(Settings settings) {
            if (httpTls == null) {
                return Optional.empty();
            }
            return Optional.of(new SecureSettingsFactory() {
                @Override
                public Optional<SecureTransportSettingsProvider> getSecureTransportSettingsProvider(Settings s) {
                    return Optional.empty();
                }

                @Override
                public Optional<SecureHttpTransportSettingsProvider> getSecureHttpTransportSettingsProvider(Settings s) {
                    return Optional.of(new SecureHttpTransportSettingsProvider() {
                        @Override
                        public Optional<TransportExceptionHandler> buildHttpServerExceptionHandler(
                            Settings s2, HttpServerTransport transport) {
                            return Optional.empty();
                        }

                        @Override
                        public Optional<SSLEngine> buildSecureHttpServerEngine(Settings s2, HttpServerTransport transport) {
                            SSLEngine engine = httpTls.createSSLEngine();
                            engine.setUseClientMode(false);
                            return Optional.of(engine);
                        }
                    });
                }
            });
        }

        @Override
        public UnaryOperator<RestHandler> getRestHandlerWrapper(ThreadContext threadContext) {
            String expected = basicAuthHeader;
            if (expected == null) {
                return null;
            }
            byte[] expectedBytes = expected.getBytes(StandardCharsets.UTF_8);
            return handler -> new RestHandler.Wrapper(handler) {
                @Override
                public void handleRequest(RestRequest request, RestChannel channel, NodeClient client) throws Exception {
                    String given = request.header("Authorization");
                    if (given != null
                        && MessageDigest.isEqual(given.getBytes(StandardCharsets.UTF_8), expectedBytes)) {
                        super.handleRequest(request, channel, client);
                        return;
                    }
                    BytesRestResponse response = new BytesRestResponse(
                        RestStatus.UNAUTHORIZED, "text/plain; charset=UTF-8", "Unauthorized");
                    response.addHeader("WWW-Authenticate", "Basic realm=\"cairn-testbed\"");
                    channel.sendResponse(response);
                }
            };
        }
    }

    /** An SSLContext serving the certificate chain in {@code certPem} with the key in {@code keyPem}. */
    static SSLContext sslContext(Path certPem, Path keyPem) throws Exception {
        Collection<? extends Certificate> chain;
        try (var in = Files.newInputStream(certPem)) {
            chain = CertificateFactory.getInstance("X.509").generateCertificates(in);
        }
        String pem = Files.readString(keyPem);
        String base64 = pem.replaceAll("-----[A-Z ]+-----", "").replaceAll("\\s", "");
        PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(Base64.getDecoder().decode(base64));
        PrivateKey key = null;
        for (String algorithm : List.of("EC", "RSA", "Ed25519")) {
            try {
                key = KeyFactory.getInstance(algorithm).generatePrivate(spec);
                break;
            } catch (Exception e) {
                // Try the next algorithm.
            }
        }
        if (key == null) {
            throw new IllegalArgumentException(keyPem + ": not a PKCS#8 EC, RSA or Ed25519 key");
        }
        char[] password = "cairn".toCharArray();
        KeyStore store = KeyStore.getInstance("PKCS12");
        store.load(null, null);
        store.setKeyEntry("node", key, password, chain.toArray(new Certificate[0]));
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(store, password);
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(kmf.getKeyManagers(), null, null);
        return context;
    }

    /** Node's constructor taking classpath plugins is protected. */
    static final class ClasspathPluginsNode extends Node {
        ClasspathPluginsNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    public static void main(String[] args) throws Exception {
        Path home = null;
        Path repo = null;
        String httpPort = null;
        String transportPort = null;
        Path tlsCert = null;
        Path tlsKey = null;
        Path basicAuthFile = null;
        List<String> extra = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            switch (arg) {
                case "--home" -> home = Paths.get(value(args, ++i, arg));
                case "--repo" -> repo = Paths.get(value(args, ++i, arg));
                case "--http-port" -> httpPort = value(args, ++i, arg);
                case "--transport-port" -> transportPort = value(args, ++i, arg);
                case "--tls-cert" -> tlsCert = Paths.get(value(args, ++i, arg));
                case "--tls-key" -> tlsKey = Paths.get(value(args, ++i, arg));
                case "--basic-auth-file" -> basicAuthFile = Paths.get(value(args, ++i, arg));
                case "--version" -> {
                    System.out.println("OpenSearch " + Version.CURRENT);
                    return;
                }
                default -> {
                    if (arg.startsWith("-E") && arg.contains("=")) {
                        extra.add(arg.substring(2));
                    } else {
                        usage("unknown argument " + arg);
                    }
                }
            }
        }
        if (home == null || httpPort == null) {
            usage("--home and --http-port are required");
        }
        if ((tlsCert == null) != (tlsKey == null)) {
            usage("--tls-cert and --tls-key go together");
        }
        if (tlsCert != null) {
            httpTls = sslContext(tlsCert, tlsKey);
        }
        if (basicAuthFile != null) {
            String credentials = Files.readString(basicAuthFile).trim();
            basicAuthHeader = "Basic "
                + Base64.getEncoder().encodeToString(credentials.getBytes(StandardCharsets.UTF_8));
        }
        home = home.toAbsolutePath();
        if (repo == null) {
            repo = home.resolve("repo");
        }
        Path config = home.resolve("config");
        Files.createDirectories(config);
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        Files.createDirectories(repo);
        Path log4j2 = config.resolve("log4j2.properties");
        if (!Files.exists(log4j2)) {
            Files.write(log4j2, LOG4J2.getBytes(StandardCharsets.UTF_8));
        }

        Settings.Builder settings = Settings.builder()
            .put("cluster.name", "cairn-testbed")
            .put("node.name", "cairn-testbed-0")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .putList("path.repo", repo.toAbsolutePath().toString())
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", transportPort != null ? transportPort : "0")
            // A test machine's disk may be fuller than the default watermarks allow.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.auto_create_index", true);
        if (httpTls != null) {
            settings.put("http.type", Netty4Plugin.NETTY_SECURE_HTTP_TRANSPORT_NAME);
        }
        for (String kv : extra) {
            int eq = kv.indexOf('=');
            settings.put(kv.substring(0, eq), kv.substring(eq + 1));
        }

        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings.build(), Collections.emptyMap(), config, () -> "cairn-testbed-0");
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(environment.settings()));
        LogConfigurator.configure(environment);

        long started = System.nanoTime();
        Node node = new ClasspathPluginsNode(environment, List.of(Netty4Plugin.class, TestSecurityPlugin.class));
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "cairn-launcher-shutdown"));
        node.start();
        System.out.printf("cairn-launcher: OpenSearch %s started in %d ms, %s://127.0.0.1:%s%s%n",
            Version.CURRENT, (System.nanoTime() - started) / 1_000_000, httpTls != null ? "https" : "http",
            httpPort, basicAuthHeader != null ? " (basic auth)" : "");
        System.out.flush();
        closed.await();
    }

    private static String value(String[] args, int i, String flag) {
        if (i >= args.length) {
            usage(flag + " needs a value");
        }
        return args[i];
    }

    private static void usage(String problem) {
        System.err.println("cairn-launcher: " + problem);
        System.err.println("usage: Launcher --home DIR --http-port N [--transport-port N] [--repo DIR]"
            + " [--tls-cert PEM --tls-key PEM] [--basic-auth-file FILE] [-Ekey=value ...]");
        System.exit(2);
    }
}
